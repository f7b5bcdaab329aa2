"""What a finished job means for its trial: the objective values, or why there are none."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

NONE_MESSAGE = "the task returned None; set optimized_metric to a metric the run logs"
MAX_ERROR_CHARS = 2000


class BadReturnError(ValueError):
    """A job returned something that is not its objective (None, text, wrong length, NaN)."""


def objective_values(value: Any, n_objectives: int) -> list[float]:
    """The job's return value as ``n_objectives`` finite-or-infinite floats, or BadReturnError."""
    if value is None:
        raise BadReturnError(NONE_MESSAGE)
    items = list(value) if n_objectives > 1 and isinstance(value, (list, tuple)) else [value]
    if len(items) != n_objectives:
        raise BadReturnError(f"the task returned {value!r}; expected {n_objectives} numbers, one per direction")
    out = []
    for item in items:
        if item is None:
            raise BadReturnError(NONE_MESSAGE)
        if isinstance(item, (str, bytes, bool)):
            raise BadReturnError(f"the task returned {item!r} ({type(item).__name__}); expected a number")
        try:
            number = float(item)
        except (TypeError, ValueError) as exc:
            raise BadReturnError(f"the task returned {item!r} ({type(item).__name__}); expected a number") from exc
        if math.isnan(number):
            raise BadReturnError("the task returned nan (did the run diverge?)")
        out.append(number)
    return out


def job_error(output_dir: Any) -> str | None:
    """The error a job recorded in its ``results.json`` (status failed/diverged), if any.

    weightshare's train task catches its own failures in a multirun, records them there and
    returns None, so that is where the reason for a missing objective is.
    """
    if output_dir is None:
        return None
    try:
        summary = json.loads((Path(str(output_dir)) / "results.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("status") not in ("failed", "diverged"):
        return None
    error = summary.get("error")
    return f"{summary['status']}: {error}" if error else str(summary["status"])
