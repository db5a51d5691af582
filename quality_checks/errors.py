"""Typed errors of the whole project, and those of the quality gate.

``MobileDermError`` is the one base class of every error a user may see: it names the
file (or folder) it is about and the problem, and prints as ``<path>: <problem>``. It
lives here, in the lowest package, so the gate's errors and ``mobile_derm``'s
(``mobile_derm.errors``: DataError, ConfigError, ModelFileError) share it and every CLI
catches one type.
"""
from __future__ import annotations

from pathlib import Path


class MobileDermError(Exception):
    """Base class: anything a CLI reports as ``error: <path>: <problem>``."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = str(problem)
        super().__init__(f"{self.path}: {self.problem}" if self.path is not None else self.problem)


class QualityCheckError(MobileDermError):
    """Base class of the quality gate's errors."""


class ImageReadError(QualityCheckError):
    """A photo that cannot be read or decoded (missing, truncated, unsupported, too large)."""


class GateConfigError(QualityCheckError):
    """A gate config file (JSON) that is missing or has bad values."""
