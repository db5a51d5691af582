import numpy as np
import pytest

from mobile_derm.evaluation import metrics


def test_topk_accuracy_counts_hits_in_the_first_k():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2]])
    y = np.array([0, 0, 2])
    assert metrics.topk_accuracy(probs, y, 1) == pytest.approx(1 / 3)
    assert metrics.topk_accuracy(probs, y, 2) == pytest.approx(2 / 3)
    assert metrics.topk_accuracy(probs, y, 3) == 1.0


def test_balanced_accuracy_punishes_the_majority_class_guess():
    y = np.array([0] * 8 + [1, 2])
    always_zero = np.zeros(10, dtype=int)
    assert metrics.topk_accuracy(np.eye(3)[always_zero], y, 1) == pytest.approx(0.8)
    assert metrics.balanced_accuracy(y, always_zero, 3) == pytest.approx(1 / 3)


def test_confusion_matrix_rows_are_true_labels():
    cm = metrics.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_roc_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    scores = rng.random(200) + 0.4 * y
    scores[:20] = 0.5  # ties count one half
    pos, neg = scores[y], scores[~y]
    pairwise = np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))
    assert metrics.roc_auc(y, scores) == pytest.approx(pairwise, abs=1e-12)


def test_roc_auc_extremes_and_degenerate_input():
    assert metrics.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert metrics.roc_auc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert np.isnan(metrics.roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_sensitivity_specificity_at_threshold():
    y = np.array([1, 1, 1, 0, 0])
    s = np.array([0.9, 0.6, 0.2, 0.7, 0.1])
    sens, spec = metrics.sensitivity_specificity(y, s, 0.5)
    assert sens == pytest.approx(2 / 3)
    assert spec == pytest.approx(1 / 2)


def test_ece_zero_when_confidence_equals_accuracy_and_large_when_overconfident():
    # 10 predictions at confidence 0.8, 8 of them right: perfectly calibrated.
    probs = np.tile([0.8, 0.2], (10, 1))
    y = np.array([0] * 8 + [1] * 2)
    assert metrics.expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-12)
    overconfident = np.tile([0.99, 0.01], (10, 1))
    assert metrics.expected_calibration_error(overconfident, y) == pytest.approx(0.19, abs=1e-9)


def test_bootstrap_intervals_bracket_the_figure_and_narrow_with_more_images():
    rng = np.random.default_rng(0)
    malignant = np.array([False, True, False])

    def sample(per_class):
        y = np.repeat(np.arange(3), per_class)
        # right 80% of the time, scores a bit informative about malignancy
        pred = np.where(rng.random(len(y)) < 0.8, y, (y + 1) % 3)
        return np.eye(3)[pred] * 0.7 + 0.1, y

    probs, y = sample(20)
    ci = metrics.bootstrap_intervals(probs, y, malignant, n_boot=400)
    ba = metrics.balanced_accuracy(y, probs.argmax(axis=1), 3)
    auc = metrics.roc_auc(malignant[y], probs @ malignant)
    assert ci["balanced_accuracy"][0] < ba < ci["balanced_accuracy"][1]
    assert ci["malignancy_auc"][0] < auc < ci["malignancy_auc"][1]
    width_small = np.diff(ci["balanced_accuracy"])[0]
    probs, y = sample(500)
    width_large = np.diff(metrics.bootstrap_intervals(probs, y, malignant, n_boot=400)["balanced_accuracy"])[0]
    assert width_large < width_small / 3  # ~1/sqrt(25) as wide
    # the same seed gives the same interval
    assert metrics.bootstrap_intervals(probs, y, malignant, n_boot=50) == metrics.bootstrap_intervals(probs, y, malignant, n_boot=50)


def test_bootstrap_resamples_groups_so_many_photos_of_one_lesion_count_once():
    # Two lesions per class, 50 identical photos each; the model is right on one lesion of
    # each class and wrong on the other. Resampling photos, each class's recall stays near
    # 0.5; resampling lesions, a class's recall is 0, 0.5 or 1, so balanced accuracy spans
    # far wider: both at 0 (or both at 1) has probability 1/16 > 2.5%, so the 95% interval is 0 .. 1.
    y = np.repeat([0, 0, 1, 1], 50)
    groups = np.repeat(["a0", "a1", "b0", "b1"], 50)
    right = np.repeat([True, False, True, False], 50)
    probs = np.eye(2)[np.where(right, y, 1 - y)] * 0.8 + 0.1
    malignant = np.array([False, True])
    by_image = metrics.bootstrap_intervals(probs, y, malignant, n_boot=400)
    by_lesion = metrics.bootstrap_intervals(probs, y, malignant, n_boot=400, groups=groups)
    image_width = np.diff(by_image["balanced_accuracy"])[0]
    lesion_width = np.diff(by_lesion["balanced_accuracy"])[0]
    assert image_width < 0.15
    assert by_lesion["balanced_accuracy"] == [0.0, 1.0]
    assert lesion_width > 3 * image_width
    # one image per group is the image-level bootstrap, replicate for replicate
    assert metrics.bootstrap_intervals(probs, y, malignant, n_boot=50, groups=np.arange(len(y))) == \
        metrics.bootstrap_intervals(probs, y, malignant, n_boot=50)
