"""Writes the sweep report (layout: the package docstring of :mod:`weightshare.report`).

The tables are built once into a list of :class:`ReportTable` (section title, file name, wide
frame); the CSVs and the Markdown are both written from that list, so a table cannot be in one
and missing from the other.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

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

__all__ = [
    "FAILURE_COLUMNS",
    "Report",
    "ReportTable",
    "build_tables",
    "failure_list",
    "render_markdown",
    "write_report",
]

FAILURE_COLUMNS = ["status", "data", "model", "aug_type", "aug_level", "fold", "error", "note", "job_dir", "overrides"]


class ReportTable(NamedTuple):
    """One wide table of the report: its section in ``report.md`` and its CSV under ``tables/``."""

    title: str  # the report.md section: "mnist · translate", or a VCP group's title
    convention: str
    file: str  # CSV name under tables/
    wide: pd.DataFrame
    group: VcpGroup | None = None  # the VCP group it shows; None for the paper's tables
    in_markdown: bool = True  # False: one connectivity value of a VCP sweep (CSV only)


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
    tables: list[ReportTable] = field(default_factory=list)  # every wide table, in report order


def failure_list(jobs: pd.DataFrame) -> pd.DataFrame:
    """Jobs not completed, plus completed jobs with a note, columns :data:`FAILURE_COLUMNS`."""
    flagged = jobs[(jobs["status"] != "completed") | jobs["note"].notna()]
    return flagged[FAILURE_COLUMNS].reset_index(drop=True)


def table_file_name(data: str, aug_type: str, setting: str, convention: str) -> str:
    return "_".join(p for p in (data, aug_type, slug(setting), convention) if p) + ".csv"


def vcp_file_name(group: VcpGroup, convention: str) -> str:
    return f"{group.file_stem()}_{convention}.csv"


def build_tables(
    long: pd.DataFrame, vcp: pd.DataFrame, groups: Sequence[VcpGroup], covered: set[tuple[str, str, str]]
) -> list[ReportTable]:
    """Every non-empty wide table of the report in report order: the paper's, then the VCP groups'.

    The paper's tables of ``covered`` (single connectivity values of a VCP sweep) are kept for
    their CSV and marked ``in_markdown=False``: their VCP section shows them.
    """
    # per section: title, wide table and CSV name of a convention, VCP group, shown in report.md
    sections: list[tuple[str, Callable[[str], pd.DataFrame], Callable[[str], str], VcpGroup | None, bool]] = [
        (
            f"{data} · {aug_type}" + (f" · {setting}" if setting else ""),
            functools.partial(wide_table, long, data, aug_type, setting),
            functools.partial(table_file_name, data, aug_type, setting),
            None,
            (data, aug_type, setting) not in covered,
        )
        for data, aug_type, setting in table_keys(long)
    ]
    sections += [
        (group.title, functools.partial(vcp_wide, vcp, group), functools.partial(vcp_file_name, group), group, True)
        for group in groups
    ]
    tables = [
        ReportTable(title, convention, file_of(convention), wide_of(convention), group, shown)
        for title, wide_of, file_of, group, shown in sections
        for convention in CONVENTIONS
    ]
    return [table for table in tables if not table.wide.empty]


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


def _table_markdown(table: ReportTable) -> list[str]:
    """One convention's table under its ``###`` heading."""
    if table.group is None:
        text = markdown_table(table.wide)
    else:
        text = markdown_table(table.wide, index="connectivity", models=[VCP_MODEL, REFERENCE_MODEL])
    return [f"### {table.convention.replace('_', '-')} convention", "", text, ""]


def _vcp_markdown(report: Report) -> list[str]:
    """The VCP sections (paper Figures C.1-C.2 as tables), one per group."""
    lines: list[str] = []
    for group in report.vcp_groups:
        tables = [table for table in report.tables if table.group == group]
        lines += [
            f"## {group.title}",
            "",
            f"Rows: fraction of the FCN's connections removed (`model.connectivity`); "
            f"FCN trained with {group.aug_type} {format_level(group.level)}, median over folds. "
            "The single-connectivity tables of these jobs are left out above (their CSVs are in "
            "`tables/`).",
            "",
        ]
        for table in tables:
            lines += _table_markdown(table)
        lines += [*sorted({cnn_reference_note(table.wide) for table in tables}), ""]
    return lines


def render_markdown(report: Report, reference_note: str, plot_files: Sequence[Path]) -> str:
    """``report.md`` text."""
    jobs = report.sweep.jobs
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
    # a single connectivity value of a VCP sweep is not in_markdown: shown in its VCP section
    paper_tables = [table for table in report.tables if table.group is None and table.in_markdown]
    for title, section in itertools.groupby(paper_tables, key=lambda table: table.title):
        lines += [f"## {title}", ""]
        for table in section:
            lines += _table_markdown(table)
    if report.long.empty:
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
    report.tables = build_tables(long, report.vcp, report.vcp_groups, report.covered)

    tables_dir = out_dir / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    frames = [(long, tables_dir / "all_long.csv")]
    if report.vcp_groups:
        frames.append((report.vcp, tables_dir / "vcp_long.csv"))
    frames += [(table.wide, tables_dir / table.file) for table in report.tables]
    frames.append((report.failures, out_dir / "failures.csv"))
    for frame, path in frames:
        frame.to_csv(path, index=False)
    files = [path for _, path in frames]

    plot_files: list[Path] = []
    if plots:
        # imported here: matplotlib is only needed with plots (the tables and report.md do without)
        from weightshare.report.figures import plot_sweep

        plot_files = plot_sweep(
            sweep.jobs, sweep.epochs, out_dir / "plots", convention=plot_convention, fd_layers=fd_layers
        )
        files.extend(plot_files)
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(report, reference_note, plot_files))
    files.append(md_path)
    report.files = files
    return report
