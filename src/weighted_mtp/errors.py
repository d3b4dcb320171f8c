"""User-facing errors. The CLI prints any of these as one line and exits with status 2,
so messages must name the file and line, the config key or the tensor shape at fault."""

from __future__ import annotations

from pathlib import Path


class WMTPError(Exception):
    """Base class for errors caused by the user's input rather than by a bug."""


class ConfigError(WMTPError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class DataError(WMTPError):
    """A data file is malformed, or sampling left nothing to train on."""

    @classmethod
    def at(cls, path: str | Path, line: int, message: str) -> "DataError":
        return cls(f"{path}:{line}: {message}")


class TrainingError(WMTPError):
    """Training cannot continue (non-finite loss, unusable checkpoint)."""
