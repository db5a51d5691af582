"""Evaluation: metrics (``metrics``), the test report with operating points
(``report``), abstention on other image sets (``other_sets``) and the fuzz benchmark of
the app path on malformed files (``fuzz``)."""
