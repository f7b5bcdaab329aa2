"""Errors the project raises on bad input.

Every error a user can cause derives from :class:`WeightshareError`, so the command-line
entry point can print it as one line (no deep traceback) and exit with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def did_you_mean(word: str, options: Iterable[Any], *, prefix: str = "") -> str:
    """``"; did you mean 'max_epochs'?"`` for the closest of ``options`` (difflib), else ``""``.

    ``prefix`` is put before the suggestion (``trainer.``), so the hint is the full key.
    """
    names = [str(o) for o in options]
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


class WeightshareError(Exception):
    """Base class of the project's user-facing errors."""


class ConfigError(WeightshareError, ValueError):
    """A config value is out of range, of the wrong type, or unknown.

    The message names the key, the bad value and what is allowed, in one line.
    """

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"config error: {key}={value!r} is not allowed; expected {allowed}")


class DataError(WeightshareError, OSError):
    """A dataset file is missing, fails its checksum, or is malformed. Names the file."""


class CheckpointError(WeightshareError, RuntimeError):
    """A checkpoint is missing, unreadable, or would run code when unpickled."""


class DivergenceError(WeightshareError, FloatingPointError):
    """The training loss became NaN or infinite (a job status ``diverged``, not a user error)."""

    def __init__(self, epoch: int, step: int, value: float) -> None:
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(f"training diverged: loss={value} at epoch {epoch}, step {step}")


class RunMismatchError(WeightshareError):
    """A resume would continue one run under another run's config (names the keys that differ)."""
