"""Typed errors the CLI turns into one-line messages.

Every error names the file (or folder) it is about and the problem, so a user
never has to read a traceback from deep inside OpenCV or TensorFlow. They derive
from ``MobileDermError`` (defined in ``mobile_derm_quality.errors``), as the quality
gate's errors do.
"""
from __future__ import annotations

# The base class is the quality gate's (the lowest package), so one type covers both.
from mobile_derm_quality.errors import MobileDermError

__all__ = ["MobileDermError", "DataError", "ConfigError", "ModelFileError"]


class DataError(MobileDermError):
    """A dataset, label file or image that cannot be used."""


class ConfigError(MobileDermError):
    """A config file or option with a bad value."""


class ModelFileError(MobileDermError):
    """A model file that is missing, truncated, or lacks our metadata."""
