"""Plots from run directories alone: ``python scripts/plot.py DIR [--out OUT]``.

A DIR holding ``metrics.csv`` (or ``results.json``) is one run: its training curves and filter
distances are drawn (:func:`weightshare.report.figures_runs.plot_run`). Any other DIR is walked as a sweep
and gets the paper's figures (:func:`weightshare.report.figures.plot_sweep`). Default OUT: ``DIR/plots``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from weightshare.errors import WeightshareError
from weightshare.report.budget import budget_differences, budget_subtitles
from weightshare.report.collect import load_sweep
from weightshare.report.figures import plot_sweep
from weightshare.report.figures_runs import plot_run
from weightshare.report.tables import CONVENTIONS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, metavar="DIR", help="a run directory or a sweep directory")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: DIR/plots)")
    parser.add_argument(
        "--fd-layers", choices=("all", "first"), default="all", help="every free layer (default) or the first only"
    )
    parser.add_argument("--convention", choices=tuple(CONVENTIONS), default="early_stopped")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else args.dir / "plots"
    try:
        if (args.dir / "metrics.csv").is_file() or (args.dir / "results.json").is_file():
            paths = plot_run(args.dir, out)
        else:
            sweep = load_sweep([args.dir])
            subtitles = budget_subtitles(budget_differences(sweep.jobs))  # a reduced budget, as in the report
            paths = plot_sweep(
                sweep.jobs,
                sweep.epochs,
                out,
                convention=args.convention,
                fd_layers=args.fd_layers,
                subtitles=subtitles,
            )
    except WeightshareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    if not paths:
        print(f"no completed job with metrics under {args.dir}: nothing to plot", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
