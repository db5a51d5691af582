import pytest

from mobile_derm.io_utils import atomic_path, atomic_write_text


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "first")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left


@pytest.mark.parametrize("name, temp_ending", [
    ("head.weights.h5", ".part.weights.h5"),  # tf_keras v3 weights format
    ("weights.h5", ".part.h5"),  # legacy HDF5: must not look like ".weights.h5"
    ("a.json", ".part.json"),
])
def test_temporary_name_keeps_the_format_suffix(tmp_path, name, temp_ending):
    with atomic_path(tmp_path / name) as tmp:
        assert tmp.name.endswith(temp_ending), tmp.name
        tmp.write_text("x")
    assert (tmp_path / name).read_text() == "x"
