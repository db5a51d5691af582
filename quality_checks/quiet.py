"""Quiet by default: the native libraries this package drives (TensorFlow and its converter,
LiteRT, libjpeg/libpng through OpenCV) print banners, probes and complaints straight to file
descriptor 2, past Python's logging. Unless verbose output is asked for (``--verbose`` or
``MOBILE_DERM_VERBOSE=1``), those calls run with descriptor 2 pointed at /dev/null; what the
package itself has to say arrives as results, progress bars or typed errors.
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager

VERBOSE_ENV = "MOBILE_DERM_VERBOSE"
_lock = threading.Lock()  # descriptor 2 is process-wide: one redirection at a time
_depth = 0
_saved_fd: int | None = None


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def set_verbose(on: bool) -> None:
    """Set for this process and the processes it starts (the environment carries it)."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"


@contextmanager
def native_output_silenced():
    """Run the block with file descriptor 2 on /dev/null (unless verbose); nested and
    concurrent uses share one redirection, restored when the last one ends."""
    global _depth, _saved_fd
    if verbose():
        yield
        return
    with _lock:
        if _depth == 0:
            sys.stderr.flush()
            _saved_fd = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved_fd is not None:
                os.dup2(_saved_fd, 2)
                os.close(_saved_fd)
                _saved_fd = None
