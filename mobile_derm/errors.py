"""Typed errors the CLI turns into one-line messages.

Every error names the file (or folder) it is about and the problem, so a user
never has to read a traceback from deep inside OpenCV or TensorFlow.
"""
from __future__ import annotations

from pathlib import Path


class MobileDermError(Exception):
    """Base class: anything the CLI reports as ``error: <path>: <problem>``."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class DataError(MobileDermError):
    """A dataset, label file or image that cannot be used."""


class ConfigError(MobileDermError):
    """A config file or option with a bad value."""


class ModelFileError(MobileDermError):
    """A model file that is missing, truncated, or lacks our metadata."""
