"""Area under the ROC curve: the project's one implementation (numpy only).

The gate's evaluation (clean vs degraded photos) and the classifier's metrics
(``mobile_derm.evaluation.metrics.roc_auc``: malignant vs benign) both use it.
"""
from __future__ import annotations

import numpy as np


def roc_auc(pos_scores, neg_scores) -> float | None:
    """P(a score of ``pos_scores`` > a score of ``neg_scores``), ties counting half: the
    area under the ROC curve when a higher score means "positive" (Mann-Whitney U /
    n_pos n_neg). None when either group is empty."""
    pos = np.asarray(pos_scores, np.float64).ravel()
    neg = np.asarray(neg_scores, np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return None
    # ranks of all scores together (1-based), tied scores sharing the mean of their ranks
    _, group, group_size = np.unique(np.concatenate([pos, neg]), return_inverse=True, return_counts=True)
    last_rank = np.cumsum(group_size)
    ranks = (last_rank - (group_size - 1) / 2.0)[group]
    pos_rank_sum = ranks[: pos.size].sum()
    return float((pos_rank_sum - pos.size * (pos.size + 1) / 2.0) / (pos.size * neg.size))
