"""The project's shared low-level helpers in mobile_derm_quality: atomic writes and their
file modes, JSON objects, figures, the error base class, ROC-AUC, the whitened distance."""
import json
import os
import stat

import numpy as np
import pytest

from mobile_derm_quality.errors import GateConfigError, MobileDermError, QualityCheckError
from mobile_derm_quality.files import atomic_path, atomic_write_text, pyplot, read_json_object, save_figure
from mobile_derm_quality.roc import roc_auc
from mobile_derm_quality.whitened_distance import WhitenedDistance, fit_one_class


@pytest.fixture
def umask():
    """Set the process umask for one test, then put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_get_the_umask_derived_mode_not_0600(tmp_path, umask):
    umask(0o022)
    atomic_write_text(tmp_path / "model_info.json", "{}")
    assert _mode(tmp_path / "model_info.json") == 0o644  # readable by a web server serving the folder
    with atomic_path(tmp_path / "weights.h5") as tmp:  # a writer that opens the path itself (Keras, numpy)
        assert _mode(tmp) == 0o644
        tmp.write_bytes(b"x")
    assert _mode(tmp_path / "weights.h5") == 0o644
    umask(0o077)  # a user who wants private files gets them
    atomic_write_text(tmp_path / "private.json", "{}")
    assert _mode(tmp_path / "private.json") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_info.json", "private.json", "weights.h5"]


def test_read_json_object_names_the_file_and_the_problem(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"a": 1}))
    assert read_json_object(good, GateConfigError, "gate config") == {"a": 1}
    with pytest.raises(GateConfigError, match="gate config file not found") as e:
        read_json_object(tmp_path / "absent.json", GateConfigError, "gate config")
    assert e.value.path == str(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n  oops\n}')
    with pytest.raises(GateConfigError, match="not valid JSON.*line 3"):
        read_json_object(bad, GateConfigError, "gate config")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(GateConfigError, match="must be a JSON object"):
        read_json_object(listed, GateConfigError, "gate config")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(GateConfigError, match="cannot read"):
        read_json_object(binary, GateConfigError, "gate config")


def test_save_figure_writes_atomically_and_closes_the_figure(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    assert plt.get_backend().lower() == "agg"


def test_one_error_base_for_the_gate_and_the_classifier():
    from mobile_derm.errors import ConfigError, DataError, ModelFileError

    for error_type in (QualityCheckError, GateConfigError, ConfigError, DataError, ModelFileError):
        assert issubclass(error_type, MobileDermError)
    e = ConfigError("a/b.json", "bad value")
    assert str(e) == "a/b.json: bad value" and e.path == "a/b.json" and e.problem == "bad value"
    assert str(GateConfigError(None, "no photos")) == "no photos"


def test_roc_auc_is_the_pairwise_probability_with_ties_counting_half():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 30).astype(float)  # many ties
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(pos, neg) == pytest.approx(pairwise, abs=1e-12)
    assert roc_auc([1, 2, 3], [0, 0.5]) == 1.0 and roc_auc([0], [1]) == 0.0
    assert roc_auc([], [1]) is None


def test_whitened_distance_nearest_centre_and_distance_from_the_subspace():
    rng = np.random.default_rng(1)
    # points spread along the first two axes only
    x = np.zeros((500, 4))
    x[:, :2] = rng.normal(size=(500, 2)) * [10.0, 1.0]
    x[:, 2:] = rng.normal(size=(500, 2)) * 1e-2
    model = fit_one_class(x, 2)
    d = model.squared_distances(x)
    assert d.mean() == pytest.approx(3.0, rel=0.05)  # k + 1 for a typical fitting point
    # whitened: 10 units along the wide axis is as far as 1 unit along the narrow one
    assert model.squared_distances([[20, 0, 0, 0]])[0] == pytest.approx(model.squared_distances([[0, 2, 0, 0]])[0], rel=0.1)
    # off the subspace: tiny in plain units, far in units of the data's own spread there
    assert model.squared_distances([[0, 0, 0.2, 0]])[0] > 50 * np.median(d)
    # several centres: the distance to the nearest one
    two = WhitenedDistance(np.zeros(2), np.eye(2), centres=np.array([[0.0, 0.0], [5.0, 0.0]]))
    np.testing.assert_allclose(two.squared_distances([[4.0, 0.0], [-1.0, 1.0]]), [1.0, 2.0])
