"""Reading and writing the project's files: atomic writes, JSON objects, figures.

The one home of these helpers for the whole project: ``mobile_derm`` imports them from
here (through ``mobile_derm.io_utils``), so the quality gate, the classifier and the
export write files the same way.

* Atomic writes: the data goes to a temporary file in the target's folder, which is
  renamed over the target only once it is complete; a crash or an error leaves the old
  file (or none), never half a file.
* File modes: the temporary file is created the way ``open(path, "w")`` creates a file,
  ``0o666`` minus the user's umask (``0o644`` with the usual umask ``022``), so an
  exported model or report can be read by whoever may read the folder. (``tempfile.mkstemp``
  would make every written file ``0o600``, private to its writer.)
"""
from __future__ import annotations

import io
import json
import os
from contextlib import contextmanager
from pathlib import Path

from mobile_derm_quality.errors import MobileDermError

# tf_keras reads "x.weights.h5" as its v3 weights format but "x.h5" as legacy HDF5, and
# Keras chooses the format by the name's ending: a temporary name keeps the whole ending.
_DOUBLE_SUFFIXES = (".weights.h5",)


def _create_temporary(path: Path) -> Path:
    """A new, empty file next to ``path``, created with ``open``'s umask-derived mode."""
    suffix = next((s for s in _DOUBLE_SUFFIXES if path.name.endswith(s)), path.suffix)
    stem = path.name[: -len(suffix)] if suffix else path.name
    while True:
        tmp = path.parent / f".{stem}.{os.urandom(4).hex()}.part{suffix}"
        try:
            # O_EXCL: a name another writer already holds is never reused
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; rename it into place on success.

    On any exception the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_json_object(path: str | Path, error_type: type[MobileDermError], what: str) -> dict:
    """The JSON object in ``path``; anything else is an ``error_type`` naming the file:
    missing, unreadable, not JSON (with the line), or JSON whose top level is not an object.
    ``what`` names the kind of file in the messages ("gate config", "taxonomy", ...)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error_type(path, f"{what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error_type(path, f"cannot read the {what} file ({exc})") from None
    return parse_json_object(text, path, error_type, what)


def parse_json_object(text: str, source: str | Path | None, error_type: type[MobileDermError], what: str) -> dict:
    """``read_json_object`` for JSON text already read (e.g. from inside a model file);
    ``source`` names where it came from in the errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error_type(source, f"not a {what} JSON file (not valid JSON: {exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise error_type(source, f"not a {what} JSON file (the top level must be a JSON object)")
    return data


def save_figure(fig, path: str | Path, **savefig_options) -> None:
    """Write a matplotlib figure atomically (format from the file's ending) and close it.
    ``savefig_options`` go to ``Figure.savefig`` (default ``dpi=110``)."""
    plt = pyplot()  # pyplot keeps every figure it made alive until it is closed
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **{"dpi": 110, **savefig_options})
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: figures for files, no display needed.
    Every plotting module gets pyplot from here, so the backend is chosen in one place."""
    # imported on first use: matplotlib is slow to import and checking a photo never needs it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
