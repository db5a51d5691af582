"""Quiet by default: the native libraries this package drives (TensorFlow and its converter,
LiteRT, OpenCV) print banners, probes and complaints straight to file descriptor 2, past
Python's logging. Unless verbose output is asked for (``--verbose`` or ``MOBILE_DERM_VERBOSE=1``),
the one-off calls that do (importing TensorFlow, converting, creating an interpreter) run with
descriptor 2 pointed at /dev/null, and OpenCV's log level is silent; what the package itself
has to say arrives as results, progress bars or typed errors. (Decoding is not redirected: it
runs in threads beside progress bars, and libjpeg's rare "Corrupt JPEG data" line about a
damaged file is followed by that file's own error or verdict.)
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
    """Set for this process and the processes it starts (the environment carries it), and
    set OpenCV's own log level to match (its decoders log damaged files as errors)."""
    import cv2

    os.environ[VERBOSE_ENV] = "1" if on else "0"
    logging = cv2.utils.logging
    logging.setLogLevel(logging.LOG_LEVEL_INFO if on else logging.LOG_LEVEL_SILENT)


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
