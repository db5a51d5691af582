"""Evaluation: metrics (``metrics``), the test report with operating points
(``report``), abstention on other image sets (``other_sets``), the model card written with
every export (``model_card``) and the fuzz benchmark of the app path on malformed files (``fuzz``)."""
