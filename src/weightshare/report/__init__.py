"""Sweep report: the paper's tables, differences to the paper, plots and the failure list.

``python -m weightshare.report DIR [DIR ...] [--out OUT] [--reference-dir PATH] [--no-plots]``
(console script ``weightshare-report``) reads every job under the given directories
(:mod:`.collect`), builds the tables (:mod:`.tables`) next to the paper's numbers
(:mod:`.reference`) and writes into ``OUT`` (default ``<first DIR>/report/``):

- ``report.md``: one section per data x augmentation-type table, each in the three labelled
  conventions, cells ``measured (paper, measured - paper)``, n folds per cell; then one section
  per VCP group (:mod:`.vcp`: FCN accuracy vs connectivity, Figures C.1-C.2), which replaces
  the single-row tables of a connectivity sweep; then the missing and failed jobs (and why the
  list may be incomplete) and any warnings; then the plots;
- ``tables/<data>_<aug_type>[_<setting>]_<convention>.csv``: wide tables in the paper's layout,
  ``tables/all_long.csv``: every cell of every table in long form (columns in :mod:`.tables`);
  ``tables/vcp_<data>_<aug_type>_<level>[_<setting>]_<convention>.csv`` and
  ``tables/vcp_long.csv``: the VCP view, when the sweep has one;
- ``failures.csv``: jobs that are not completed (status, identity, error, directory, overrides)
  and completed jobs with a note (e.g. no ``metrics.csv``);
- ``plots/*.png`` (:mod:`weightshare.plots`) unless ``plots=False``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from weightshare.report.collect import Sweep, load_sweep
from weightshare.report.reference import default_reference_dir, load_reference
from weightshare.report.tables import (
    CONVENTIONS,
    PAPER_METRICS,
    duplicate_folds,
    format_level,
    markdown_table,
    slug,
    summarize,
    table_keys,
    wide_table,
)
from weightshare.report.vcp import (
    REFERENCE_MODEL,
    VCP_MODEL,
    VcpGroup,
    cnn_reference_note,
    covered_tables,
    summarize_vcp,
    vcp_groups,
    vcp_wide,
)

__all__ = ["FAILURE_COLUMNS", "Report", "failure_list", "load_sweep", "render_markdown", "write_report"]

FAILURE_COLUMNS = ["status", "data", "model", "aug_type", "aug_level", "fold", "error", "note", "job_dir", "overrides"]


@dataclass
class Report:
    """What :func:`write_report` produced (the frames are also on disk)."""

    out_dir: Path
    sweep: Sweep
    long: pd.DataFrame
    failures: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    vcp: pd.DataFrame = field(default_factory=pd.DataFrame)  # long VCP frame (:mod:`.vcp`)
    vcp_groups: list[VcpGroup] = field(default_factory=list)
    covered: set[tuple[str, str, str]] = field(default_factory=set)  # tables the VCP view replaces


def failure_list(jobs: pd.DataFrame) -> pd.DataFrame:
    """Jobs not completed, plus completed jobs with a note, columns :data:`FAILURE_COLUMNS`."""
    flagged = jobs[(jobs["status"] != "completed") | jobs["note"].notna()]
    return flagged[FAILURE_COLUMNS].reset_index(drop=True)


def table_file_name(data: str, aug_type: str, setting: str, convention: str) -> str:
    return "_".join(p for p in (data, aug_type, slug(setting), convention) if p) + ".csv"


def vcp_file_name(group: VcpGroup, convention: str) -> str:
    return f"{group.file_stem()}_{convention}.csv"


def _relative(path: str, roots: Sequence[Path]) -> str:
    for root in roots:
        try:
            return str(Path(root.name) / Path(path).relative_to(root.resolve()))
        except ValueError:
            continue
    return path


def _escape(text: object) -> str:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _vcp_markdown(report: Report) -> list[str]:
    """The VCP sections (paper Figures C.1-C.2 as tables), one per group."""
    lines: list[str] = []
    for group in report.vcp_groups:
        lines += [
            f"## {group.title}",
            "",
            f"Rows: fraction of the FCN's connections removed (`model.connectivity`); "
            f"FCN trained with {group.aug_type} {format_level(group.level)}, median over folds. "
            "The single-connectivity tables of these jobs are left out above (their CSVs are in "
            "`tables/`).",
            "",
        ]
        notes = set()
        for convention in CONVENTIONS:
            wide = vcp_wide(report.vcp, group, convention)
            if wide.empty:
                continue
            notes.add(cnn_reference_note(wide))
            lines += [
                f"### {convention.replace('_', '-')} convention",
                "",
                markdown_table(wide, index="connectivity", models=[VCP_MODEL, REFERENCE_MODEL]),
                "",
            ]
        lines += [*sorted(notes), ""]
    return lines


def render_markdown(report: Report, reference_note: str, plot_files: Sequence[Path]) -> str:
    """``report.md`` text."""
    jobs = report.sweep.jobs
    long = report.long
    n_done = int((jobs["status"] == "completed").sum())
    lines = [
        "# Sweep report",
        "",
        f"Generated {datetime.now():%Y-%m-%d %H:%M:%S} from: " + ", ".join(f"`{r}`" for r in report.sweep.roots),
        "",
        f"Jobs found: {len(jobs)}; completed: {n_done}; missing or failed: {len(jobs) - n_done}.",
        f"Paper values: {reference_note}",
        "",
        "## How to read the tables",
        "",
        "Rows are training augmentation levels; columns are per model the number of folds `n` and the "
        "median over folds of each accuracy (train, validation, and validation under each evaluation "
        "variant). A cell reads `measured (paper, measured - paper)` where the paper reports the number "
        "(Tables 1-2 and B.1-B.3). The level-0.00 row is the no-augmentation run, shared by every "
        "augmentation type. Conventions:",
        "",
    ]
    lines += [f"- **{name}**: {text}" for name, text in CONVENTIONS.items()]
    lines += [
        "",
        "Only completed jobs count. CSV: `tables/` (wide, one file per table and convention; "
        "`all_long.csv` has every cell with min, max and the number of pooled values).",
        "",
    ]
    for data, aug_type, setting in table_keys(long):
        if (data, aug_type, setting) in report.covered:
            continue  # a single connectivity value of a VCP sweep: shown in its VCP section
        heading = f"## {data} · {aug_type}" + (f" · {setting}" if setting else "")
        lines += [heading, ""]
        for convention in CONVENTIONS:
            wide = wide_table(long, data, aug_type, setting, convention)
            if wide.empty:
                continue
            lines += [f"### {convention.replace('_', '-')} convention", "", markdown_table(wide), ""]
    if long.empty:
        lines += ["## Tables", "", "No completed job: nothing to tabulate.", ""]
    lines += _vcp_markdown(report)

    failures = report.failures
    lines += ["## Missing or failed jobs", ""]
    if report.sweep.notes:
        lines += [
            "Missing-job detection is incomplete: jobs of these sweeps that were never created are not listed.",
            "",
        ]
        lines += [f"- {_escape(note)}" for note in report.sweep.notes]
        lines.append("")
    if failures.empty:
        lines += ["None: every job found completed.", ""]
    else:
        lines += [
            "| status | job | data | model | aug | level | fold | error / note | overrides |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in failures.to_dict("records"):
            level = row["aug_level"]
            level_text = "" if level is None or math.isnan(level) else format_level(level)
            fold = "" if row["fold"] is None or math.isnan(row["fold"]) else str(int(row["fold"]))
            message = "; ".join(_escape(m) for m in (row["error"], row["note"]) if _escape(m))
            job = _relative(row["job_dir"], report.sweep.roots)
            cells = [
                row["status"],
                f"`{job}`",
                _escape(row["data"]),
                _escape(row["model"]),
                _escape(row["aug_type"]),
                level_text,
                fold,
                message,
                _escape(row["overrides"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    duplicates = duplicate_folds(jobs)
    if not duplicates.empty:
        lines += [
            "## Warnings",
            "",
            "Several completed jobs share data, model, aug type, level, fold and seed; all are counted:",
            "",
        ]
        for row in duplicates.to_dict("records"):
            lines.append(
                f"- {row['data']} {row['model']} {row['aug_type']} {format_level(row['aug_level'])} "
                f"fold {row['fold']:.0f} {row['setting']}: {row['n_jobs']} jobs"
            )
        lines.append("")

    if plot_files:
        lines += ["## Plots", ""]
        for path in plot_files:
            rel = path.relative_to(report.out_dir)
            lines += [f"![{path.stem}]({rel.as_posix()})", ""]
    return "\n".join(lines)


def write_report(
    dirs: Sequence[Path | str],
    out: Path | str | None = None,
    *,
    reference_dir: Path | str | None = None,
    plots: bool = True,
    fd_layers: str = "first",
    plot_convention: str = "early_stopped",
) -> Report:
    """Load, tabulate, plot and write everything (see the module docstring); returns what it did.

    ``reference_dir=None`` uses :func:`~.reference.default_reference_dir` and carries on without
    paper values when it is absent; an explicit directory that lacks the CSVs is an error.
    """
    sweep = load_sweep(dirs)
    out_dir = Path(out) if out is not None else Path(dirs[0]) / "report"
    reference = load_reference(reference_dir, required=reference_dir is not None)
    ref_path = Path(reference_dir) if reference_dir is not None else default_reference_dir()
    reference_note = (
        f"`{ref_path}` ({', '.join(PAPER_METRICS)})"
        if not reference.empty
        else f"none found at `{ref_path}` (pass --reference-dir)"
    )
    long = summarize(sweep.jobs, sweep.epochs, reference)
    report = Report(
        out_dir=out_dir,
        sweep=sweep,
        long=long,
        failures=failure_list(sweep.jobs),
        vcp=summarize_vcp(sweep.jobs, sweep.epochs),
        vcp_groups=vcp_groups(sweep.jobs),
        covered=covered_tables(sweep.jobs),
    )

    tables_dir = out_dir / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    long_path = tables_dir / "all_long.csv"
    long.to_csv(long_path, index=False)
    files.append(long_path)
    for data, aug_type, setting in table_keys(long):
        for convention in CONVENTIONS:
            wide = wide_table(long, data, aug_type, setting, convention)
            if wide.empty:
                continue
            path = tables_dir / table_file_name(data, aug_type, setting, convention)
            wide.to_csv(path, index=False)
            files.append(path)
    if report.vcp_groups:
        vcp_long_path = tables_dir / "vcp_long.csv"
        report.vcp.to_csv(vcp_long_path, index=False)
        files.append(vcp_long_path)
        for group in report.vcp_groups:
            for convention in CONVENTIONS:
                wide = vcp_wide(report.vcp, group, convention)
                if wide.empty:
                    continue
                path = tables_dir / vcp_file_name(group, convention)
                wide.to_csv(path, index=False)
                files.append(path)
    failures_path = out_dir / "failures.csv"
    report.failures.to_csv(failures_path, index=False)
    files.append(failures_path)

    plot_files: list[Path] = []
    if plots:
        # imported here: matplotlib is only needed with plots, and weightshare.plots imports this package
        from weightshare.plots import plot_sweep

        plot_files = plot_sweep(
            sweep.jobs, sweep.epochs, out_dir / "plots", convention=plot_convention, fd_layers=fd_layers
        )
        files.extend(plot_files)
    from weightshare.report.spectrum import write_spectrum  # the sharing-spectrum table and figure

    spectrum_files, spectrum_md = write_spectrum(sweep, out_dir, plots=plots)
    files.extend(spectrum_files)
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(report, reference_note, plot_files) + spectrum_md)
    files.append(md_path)
    report.files = files
    return report
