"""The errors training raises on purpose, in one place. All are :class:`engine.errors.StylecastError`s, so
the CLI and the window report them as they report the engine's."""

from engine.errors import StylecastError


class TrainingError(StylecastError):
    """A training stage cannot go on (bad options, incompatible resume, disk full)."""


class DiskFullError(TrainingError):
    """Not enough free space to write a checkpoint; earlier checkpoints are untouched."""


class DatasetError(StylecastError):
    """Training or evaluation data is missing, empty or unusable."""


class TeacherError(DatasetError):
    """A teacher folder or model is unusable: bad json, missing or corrupt file, wrong conventions or output."""
