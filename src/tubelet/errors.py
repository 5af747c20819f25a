"""tubelet's one exception root.

Every error a user can cause or meet derives from :class:`TubeletError`, subclassed per area.
The CLI catches the root once and prints one line (``tubelet CMD: error: ...``) that names the
file or value and what to do; library code raises these and never prints or exits.

Exit status: :class:`UsageError` and its subclasses (a wrong flag, value or config field) -> 2;
any other :class:`TubeletError` (a run that failed: bad data, a damaged checkpoint, a
diverged loss) -> 1.
"""

from __future__ import annotations


class TubeletError(Exception):
    """Root of every error tubelet raises on purpose; ``exit_status`` is the CLI's exit code."""

    exit_status = 1


class UsageError(TubeletError):
    """Wrong usage: an unknown flag or field, an out-of-range value, an impossible combination."""

    exit_status = 2


class ConfigError(UsageError, ValueError):
    """A configuration that cannot describe a model or a run, with what to change."""


class CheckpointError(TubeletError):
    """A model folder that cannot be read: missing, damaged, non-finite or inconsistent weights."""


class DataError(TubeletError):
    """Data that cannot be used: annotations, videos, dataset layouts."""


class TrainingError(TubeletError):
    """A run that cannot go on (non-finite loss, out of memory, bad data), with what to do."""


class GenerateError(TubeletError):
    """A decoder, draft or generation request that cannot be used, with what to do."""


__all__ = ["CheckpointError", "ConfigError", "DataError", "GenerateError", "TrainingError",
           "TubeletError", "UsageError"]
