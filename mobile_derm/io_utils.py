"""File helpers: the atomic writes and JSON reading of ``mobile_derm_quality.files``
(one implementation for the whole project, re-exported here) and the user cache folder."""
from __future__ import annotations

import os
from pathlib import Path

from mobile_derm_quality.files import atomic_path, atomic_write_bytes, atomic_write_text, parse_json_object, read_json_object

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "parse_json_object", "read_json_object", "user_cache_dir"]


def user_cache_dir(*parts: str) -> Path:
    """``$MOBILE_DERM_CACHE`` or ``~/.cache/mobile_derm``: converted weights and
    decoded-pixel caches live here, never in the repo or an output folder."""
    root = Path(os.environ.get("MOBILE_DERM_CACHE") or Path.home() / ".cache" / "mobile_derm")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
