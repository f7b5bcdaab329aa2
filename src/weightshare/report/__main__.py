"""Command line of the sweep report (``python -m weightshare.report``, ``weightshare-report``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from weightshare.errors import WeightshareError
from weightshare.report.tables import CONVENTIONS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weightshare-report",
        description="Rebuild the paper's tables (and plots) from run or sweep directories.",
    )
    parser.add_argument(
        "dirs", nargs="+", type=Path, metavar="DIR", help="run or sweep directories, walked recursively for jobs"
    )
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <first DIR>/report)")
    parser.add_argument(
        "--reference-dir",
        type=Path,
        default=None,
        help="directory of the paper's CSVs (default: the copy shipped with the package)",
    )
    parser.add_argument("--no-plots", action="store_true", help="write tables and report.md only")
    parser.add_argument(
        "--fd-layers",
        choices=("all", "first"),
        default="all",
        help="filter-distance figures for every free layer (default) or the first only (the paper's Figure 5)",
    )
    parser.add_argument(
        "--per-trial",
        action="store_true",
        help="also give each trial of an Optuna search the paper's tables and figures (default: its search section)",
    )
    parser.add_argument(
        "--plot-convention",
        choices=tuple(CONVENTIONS),
        default="early_stopped",
        help="per-fold values drawn in the accuracy and quadrant-swap figures",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Write the report and print a short summary; a user error is one line on stderr, exit 2."""
    args = build_parser().parse_args(argv)
    from weightshare.report import write_report

    start = time.perf_counter()
    try:
        report = write_report(
            args.dirs,
            args.out,
            reference_dir=args.reference_dir,
            plots=not args.no_plots,
            fd_layers=args.fd_layers,
            plot_convention=args.plot_convention,
            per_trial=args.per_trial,
        )
    except WeightshareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    jobs = report.sweep.jobs
    if jobs.empty:
        print(
            "warning: no job directory (results.json or .hydra/) found under " + ", ".join(str(d) for d in args.dirs),
            file=sys.stderr,
        )
    n_done = int((jobs["status"] == "completed").sum())
    elapsed = time.perf_counter() - start
    print(
        f"{len(jobs)} jobs ({n_done} completed, {len(report.failures)} missing, failed or flagged) "
        f"-> {report.out_dir / 'report.md'} ({len(report.files)} files, {elapsed:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
