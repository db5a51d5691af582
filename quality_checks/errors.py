"""Typed errors of the quality gate.

``mobile_derm_quality`` has no dependency on ``mobile_derm``, so it defines its own
error; the main CLI prints any of them as ``error: <path>: <problem>``.
"""
from __future__ import annotations

from pathlib import Path


class QualityCheckError(Exception):
    """Base class: an error that names the file it is about and the problem."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = str(problem)
        super().__init__(f"{self.path}: {self.problem}" if self.path is not None else self.problem)


class ImageReadError(QualityCheckError):
    """A photo that cannot be read or decoded (missing, truncated, unsupported, too large)."""


class GateConfigError(QualityCheckError):
    """A gate config file (JSON) that is missing or has bad values."""
