"""Atomic file writes: never leave a half-written artifact behind."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; rename it into place on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix last: Keras chooses the format by extension, and
    # tf_keras reads "x.weights.h5" as its v3 format but "x.h5" as legacy HDF5.
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[: -len(suffix) or None]}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def user_cache_dir(*parts: str) -> Path:
    """``$MOBILE_DERM_CACHE`` or ``~/.cache/mobile_derm``: converted weights and
    decoded-pixel caches live here, never in the repo or an output folder."""
    root = Path(os.environ.get("MOBILE_DERM_CACHE") or Path.home() / ".cache" / "mobile_derm")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
