"""Domain errors: each message says what is wrong and what to do; the CLI maps them to exit 2."""

from __future__ import annotations


class AuditorError(Exception):
    """Base class for errors caused by the user's input, not by a bug in auditor."""


class ConfigError(AuditorError):
    """An option or a metadata value is missing or invalid."""


class ModelLoadError(AuditorError):
    """The model file cannot be loaded as asked."""


class DatasetError(AuditorError):
    """The dataset as a whole cannot be used (a bad single row is a recorded skip instead)."""


class AttributionError(AuditorError):
    """Attribution cannot run on this model as configured (e.g. no target layer found)."""


class ModelOutputError(AuditorError):
    """The model returns something other than logits or probabilities of the declared shape."""


class RunDirError(AuditorError):
    """The run directory holds another run, is locked by a running audit, or is incomplete."""
