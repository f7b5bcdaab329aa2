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

from weightshare.report.budget import (
    BudgetDifference,
    banner_markdown,
    budget_differences,
    budget_subtitles,
    load_protocol,
    mark_comparable,
    unknown_budget_jobs,
)
from weightshare.report.collect import Sweep, load_sweep
from weightshare.report.reference import load_reference
from weightshare.report.search import Search, find_searches, trial_jobs, write_search
from weightshare.report.spectrum import write_spectrum
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
    budget: list[BudgetDifference] = field(default_factory=list)  # differences to the protocol (:mod:`.budget`)
    n_unknown_budget: int = 0  # completed jobs whose budget is not recorded
    searches: list[Search] = field(default_factory=list)  # Optuna studies (:mod:`.search`)
    per_trial: bool = False  # the trials of a search also get the paper's tables and figures


def failure_list(jobs: pd.DataFrame) -> pd.DataFrame:
    """Jobs not completed, plus completed jobs with a note, columns :data:`FAILURE_COLUMNS`.

    A pruned trial of an Optuna search is how a search works, not a failure: its state is in
    the search's trial table, not here.
    """
    pruned_trial = (jobs["status"] == "pruned") & trial_jobs(jobs)
    flagged = jobs[((jobs["status"] != "completed") | jobs["note"].notna()) & ~pruned_trial]
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


def _how_to_read() -> list[str]:
    lines = [
        "## How to read the tables",
        "",
        "Rows are training augmentation levels; columns are per model the number of folds `n` and the "
        "median over folds of each accuracy (train, validation, and validation under each evaluation "
        "variant). A cell reads `measured (paper, measured - paper)` where the paper reports the number "
        "(Tables 1-2 and B.1-B.3); `measured (paper, n/c)` where the cell was measured under another "
        "budget than the paper's (data limits, epochs, patience or folds, listed at the top): the "
        "difference is not comparable. The level-0.00 row is the no-augmentation run, shared by every "
        "augmentation type. Conventions:",
        "",
    ]
    lines += [f"- **{name}**: {text}" for name, text in CONVENTIONS.items()]
    lines += [
        "",
        "Only completed jobs count. CSV: `tables/` (wide, one file per table and convention, an empty "
        "`diff` where not comparable; `all_long.csv` has every cell with min, max, the number of pooled "
        "values and `comparable`).",
        "",
    ]
    return lines


def _search_note(report: Report) -> list[str]:
    """Where the trials of the searches are, when they are left out of the paper's tables."""
    if not report.searches or report.per_trial:
        return []
    n_trials = int(trial_jobs(report.sweep.jobs).sum())
    return [
        f"The {n_trials} trial jobs of {len(report.searches)} Optuna search(es) are reported in their search "
        "section, not as one table and figure per trial (`--per-trial` adds those).",
        "",
    ]


def _job_counts(jobs: pd.DataFrame) -> str:
    """ "Jobs found: N; completed: C; [pruned trials: P;] missing or failed: F." (pruning is no failure)."""
    n_done = int((jobs["status"] == "completed").sum())
    n_pruned = int(((jobs["status"] == "pruned") & trial_jobs(jobs)).sum())
    pruned = f"pruned trials of a search: {n_pruned}; " if n_pruned else ""
    return f"Jobs found: {len(jobs)}; completed: {n_done}; {pruned}missing or failed: {len(jobs) - n_done - n_pruned}."


def render_markdown(
    report: Report, reference_note: str, plot_files: Sequence[Path], search_lines: Sequence[str] = ()
) -> str:
    """``report.md`` text."""
    jobs = report.sweep.jobs
    lines = [
        "# Sweep report",
        "",
        *banner_markdown(report.budget, report.n_unknown_budget),
        f"Generated {datetime.now():%Y-%m-%d %H:%M:%S} from: " + ", ".join(f"`{r}`" for r in report.sweep.roots),
        "",
        _job_counts(jobs),
        f"Paper values: {reference_note}",
        "",
        *_search_note(report),
        *search_lines,
    ]
    only_search = bool(report.searches) and report.long.empty
    if not only_search:
        lines += _how_to_read()
    # a single connectivity value of a VCP sweep is not in_markdown: shown in its VCP section
    paper_tables = [table for table in report.tables if table.group is None and table.in_markdown]
    for title, section in itertools.groupby(paper_tables, key=lambda table: table.title):
        lines += [f"## {title}", ""]
        for table in section:
            lines += _table_markdown(table)
    if report.long.empty and not only_search:
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

    # trials of a search share everything but their hyperparameters: no warning for them
    duplicates = duplicate_folds(jobs if report.per_trial else jobs[~trial_jobs(jobs)])
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
    fd_layers: str = "all",
    plot_convention: str = "early_stopped",
    per_trial: bool = False,
) -> Report:
    """Load, tabulate, plot and write everything (see the module docstring); returns what it did.

    ``reference_dir=None`` uses the paper's numbers shipped with the package
    (:data:`~.reference.PACKAGE_REFERENCE_DIR`); an explicit directory that lacks the CSVs is an
    error. The trial jobs of an Optuna search are reported in its search section
    (:mod:`.search`); ``per_trial`` also gives them the paper's tables and figures.
    """
    sweep = load_sweep(dirs)
    out_dir = Path(out) if out is not None else Path(dirs[0]) / "report"
    reference = load_reference(reference_dir, required=reference_dir is not None)
    if reference_dir is None:
        source = "the paper's Tables 1-2 and B.1-B.3, shipped with the package (`weightshare/report/reference_data/`)"
    else:
        source = f"`{reference_dir}`"
    reference_note = f"{source} ({', '.join(PAPER_METRICS)})" if not reference.empty else f"none found at {source}"
    protocol = load_protocol(reference_dir)
    differences = budget_differences(sweep.jobs, protocol)
    searches = find_searches(sweep.jobs)
    # the paper's tables and figures: every job but the trials of a search (unless per_trial)
    tabulated = sweep
    if searches and not per_trial:
        keep = ~trial_jobs(sweep.jobs)
        kept_dirs = set(sweep.jobs.loc[keep, "job_dir"])
        epochs = sweep.epochs[sweep.epochs["job_dir"].isin(kept_dirs)] if not sweep.epochs.empty else sweep.epochs
        jobs = sweep.jobs[keep].reset_index(drop=True)
        tabulated = Sweep(jobs=jobs, epochs=epochs, roots=sweep.roots, notes=sweep.notes)
    long = summarize(tabulated.jobs, tabulated.epochs, reference)
    long = mark_comparable(long, tabulated.jobs, differences, protocol)
    report = Report(
        out_dir=out_dir,
        sweep=sweep,
        long=long,
        failures=failure_list(sweep.jobs),
        vcp=summarize_vcp(tabulated.jobs, tabulated.epochs),
        vcp_groups=vcp_groups(tabulated.jobs),
        covered=covered_tables(tabulated.jobs),
        budget=differences,
        n_unknown_budget=unknown_budget_jobs(sweep.jobs),
        searches=searches,
        per_trial=per_trial,
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

    subtitles = budget_subtitles(differences)
    search_files, search_lines = write_search(
        searches, out_dir, plots=plots, subtitles=subtitles, roots=sweep.roots, reference_dir=reference_dir
    )
    files.extend(search_files)
    plot_files: list[Path] = []
    if plots:
        # imported here: matplotlib is only needed with plots (the tables and report.md do without)
        from weightshare.report.figures import plot_sweep

        plot_files = plot_sweep(
            tabulated.jobs,
            tabulated.epochs,
            out_dir / "plots",
            convention=plot_convention,
            fd_layers=fd_layers,
            subtitles=subtitles,
        )
        files.extend(plot_files)
    spectrum_files, spectrum_md = write_spectrum(tabulated, out_dir, plots=plots)  # the sharing-spectrum table
    files.extend(spectrum_files)
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(report, reference_note, plot_files, search_lines) + spectrum_md)
    files.append(md_path)
    report.files = files
    return report
