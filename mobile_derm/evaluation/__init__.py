"""Evaluation: metrics (``metrics``), the test report with operating points
(``report``) and abstention on other image sets (``other_sets``)."""
