"""Errors that mean "the user asked for something impossible", as opposed to a bug, and the one warning about data.

Front-ends print these as one line and exit non-zero; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a flag, a file, a dataset, a checkpoint."""


class ConfigError(UserError, ValueError):
    """An impossible configuration value."""


class DataError(UserError, ValueError):
    """A dataset that is missing, malformed or unsuitable for the task."""


class CheckpointError(UserError):
    """A checkpoint or workdir that cannot be used as asked."""


class NonFiniteError(UserError, FloatingPointError):
    """Training produced a NaN or inf loss."""


class MissingValuesWarning(UserWarning):
    """Values missing inside a series were filled by linear interpolation (the message counts them)."""
