"""Hydra callbacks: a summary table printed at the end of every multirun.

A sweep's jobs may run in other processes (joblib) or on other hosts (SLURM); the summary
reads their ``results.json`` files from the sweep directory, so it works for every launcher.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from weightshare.results import find_jobs, read_json, read_overrides

log = logging.getLogger("weightshare")

COLUMNS = (
    "val/acc",
    "val/translate/acc",
    "val/rotate/acc",
    "val/noise/acc",
    "val/edge_noise/acc",
    "val/quadrant_swap/acc",
)


def _overrides(job_dir: Path) -> dict[str, str]:
    """The job's command-line overrides (Hydra's .hydra/overrides.yaml), as key -> value."""
    out = {}
    for item in read_overrides(job_dir) or []:
        key, _, value = str(item).partition("=")
        if not key.lstrip("+~").startswith(("hydra.", "trial.")):
            out[key.lstrip("+~")] = value
    return out


def _aug_label(aug: str, level: Any) -> str:
    if aug in ("none", "mixed") or not isinstance(level, (int, float)):
        return str(aug)
    return f"{aug} {level:g}"


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory of the sweep (:func:`~weightshare.results.find_jobs`, job number order).

    A job without ``results.json`` is ``missing``, one whose ``results.json`` does not parse ``corrupt``.
    """
    rows = []
    for job_dir in find_jobs(sweep_dir)[0]:
        path = job_dir / "results.json"
        res = read_json(path) or {"status": "corrupt" if path.is_file() else "missing"}
        ident = res.get("identity") or {}
        final = res.get("final") or {}
        aug = ident.get("aug_type", "?")
        level = ident.get("aug_level")
        rows.append(
            {
                "job": str(path.parent.relative_to(sweep_dir)),
                "model": ident.get("model", "?"),
                "data": ident.get("data", "?"),
                "aug": _aug_label(aug, level),
                "fold": ident.get("fold", "?") if ident.get("split") != "standard" else "-",
                "status": res.get("status", "?"),
                "epochs": res.get("epochs_completed", ""),
                **{c: final.get(c) for c in COLUMNS},
                "overrides": _overrides(path.parent),
            }
        )
    return rows


def varying_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """Override keys whose values differ between jobs: what the sweep swept."""
    keys: dict[str, set[str]] = {}
    for r in rows:
        for k, v in r["overrides"].items():
            keys.setdefault(k, set()).add(v)
    return [k for k, values in keys.items() if len(values) > 1 or any(k not in r["overrides"] for r in rows)]


def print_sweep_table(sweep_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = sweep_rows(sweep_dir)
    swept = [k for k in varying_overrides(rows) if k not in ("model", "data.fold")]
    for r in rows:
        r.update({k: r["overrides"].get(k, "") for k in swept})
    table = Table(title=f"sweep {sweep_dir}")
    keys = ["job", "model", "data", "aug", "fold", *swept, "status", "epochs", *COLUMNS]
    for k in keys:
        table.add_column(k.replace("val/", "").replace("/acc", " acc"), justify="right" if k in COLUMNS else "left")
    for r in rows:
        cells = [f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k] if r[k] is not None else "-") for k in keys]
        table.add_row(*cells)
    # a log file or pipe gets the full width rather than an 80-column squeeze
    Console(width=None if sys.stdout.isatty() else 200).print(table)


class SweepSummary(Callback):
    """Print every job's status and final accuracies when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            print_sweep_table(sweep_dir)
