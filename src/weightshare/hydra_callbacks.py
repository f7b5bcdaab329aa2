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

from weightshare.results import read_json

log = logging.getLogger("weightshare")

COLUMNS = ("val/acc", "val/translate/acc", "val/rotate/acc", "val/noise/acc", "val/quadrant_swap/acc")


def _aug_label(aug: str, level: Any) -> str:
    if aug in ("none", "mixed") or not isinstance(level, (int, float)):
        return str(aug)
    return f"{aug} {level:g}"


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory that has a results.json (job number order)."""
    rows = []
    for path in sorted(sweep_dir.rglob("results.json"), key=lambda p: (len(p.parts), str(p))):
        res = read_json(path) or {"status": "corrupt"}
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
                "fold": ident.get("fold", "?"),
                "status": res.get("status", "?"),
                "epochs": res.get("epochs_completed", ""),
                **{c: final.get(c) for c in COLUMNS},
            }
        )
    return rows


def print_sweep_table(sweep_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = sweep_rows(sweep_dir)
    table = Table(title=f"sweep {sweep_dir}")
    keys = ["job", "model", "data", "aug", "fold", "status", "epochs", *COLUMNS]
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
