"""The paper's tables from loaded jobs: medians over folds in three labelled conventions.

Conventions (the protocol asks for both the principled and the original one):

- ``early_stopped``: per fold, the metrics at the early-stopping epoch (``results.json``
  ``best``: the epoch of the best ``val/acc``), then the median over folds;
- ``last_epoch``: per fold, the metrics of the last trained epoch (``results.json`` ``final``),
  then the median over folds;
- ``all_epochs``: the original code's helper: the median over every per-epoch row of
  ``metrics.csv`` of every fold pooled together. The paper's numbers were made this way, so
  the differences to the paper are most comparable in this convention.

Only ``completed`` jobs count. The level-0 jobs (``aug_type == "none"``) are one run shared by
every augmentation type: they are copied into the 0.00 row of every augmentation-type table
of the same data and setting (a data set with level-0 jobs only gets a ``none`` table).

Long frame (:func:`summarize`, written as ``tables/all_long.csv``), one row per
(convention, data, setting, aug_type, level, model, metric): ``n_jobs`` (jobs, i.e. folds, in
the cell), ``n_values`` (values pooled: one per fold, or one per epoch row for
``all_epochs``), ``median``, ``min``, ``max``, ``paper``, ``diff`` (= median - paper), and,
added by :func:`weightshare.report.budget.mark_comparable`, ``comparable`` (False: the cell was
measured under another budget than the paper's, its ``diff`` is not a comparison).
Here ``aug_type`` is the table the row belongs to; ``level`` is NaN in the ``mixed`` table
(runs with several augmentation types at once), written "mixed" in Markdown.

Wide frame (:func:`wide_table`, written as ``tables/<data>_<aug_type>[_<setting>]_<convention>.csv``):
the paper's layout, one row per ``level``; per model (``cnn`` first, then ``fcn``, then others)
the columns ``<model>/n`` (folds), ``<model>/<metric>`` (median over folds) and for the metrics
the paper reports (``train/acc``, ``val/acc``, ``val/translate/acc``) ``<model>/<metric>/paper``
and ``<model>/<metric>/diff``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import pandas as pd

from weightshare.augment.validate import EVAL_VARIANTS
from weightshare.report.reference import level_key

CONVENTIONS: dict[str, str] = {
    "early_stopped": "per fold the metrics at the early-stopping epoch (results.json `best`: epoch of the "
    "best val/acc), median over folds",
    "last_epoch": "per fold the metrics of the last trained epoch (results.json `final`), median over folds",
    "all_epochs": "the original code's convention: median over every per-epoch row of metrics.csv of every "
    "fold pooled (the paper's numbers were made this way)",
}
# train accuracy, then the validation accuracy of every evaluation variant (clean first)
TABLE_METRICS = ("train/acc", *("val/acc" if v == "clean" else f"val/{v}/acc" for v in EVAL_VARIANTS))
PAPER_METRICS = ("train/acc", "val/acc", "val/translate/acc")
METRIC_LABELS = {
    "train/acc": "train",
    "val/acc": "val",
    "val/translate/acc": "translate-val",
    "val/rotate/acc": "rotate-val",
    "val/noise/acc": "noise-val",
    "val/edge_noise/acc": "edge_noise-val",
    "val/quadrant_swap/acc": "quadrant_swap-val",
}
ROW_COLUMNS = ("job_dir", "data", "setting", "aug_type", "aug_level", "model", "fold")
CELL = ["data", "setting", "aug_type", "aug_level", "model"]
# what :func:`cell_stats` gives per cell
STAT_COLUMNS = ["n_jobs", "n_values", "median", "min", "max"]
LONG_COLUMNS = ["convention", "data", "setting", "aug_type", "level", "model", "metric", *STAT_COLUMNS, "paper", "diff"]
_CONVENTION_PREFIX = {"early_stopped": "best/", "last_epoch": "final/"}


def model_order(models: list[str] | pd.Series) -> list[str]:
    """CNN first, then FCN, then any other model alphabetically (the paper's column order)."""
    rank = {"cnn": 0, "fcn": 1}
    return sorted(set(models), key=lambda m: (rank.get(m, 2), m))


def convention_rows(jobs: pd.DataFrame, epochs: pd.DataFrame, convention: str) -> pd.DataFrame:
    """Values to take medians of: one row per completed job (or per epoch row for ``all_epochs``).

    Columns :data:`ROW_COLUMNS` then :data:`TABLE_METRICS` (NaN where a job lacks the metric).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention {convention!r} is not one of {', '.join(CONVENTIONS)}")
    if convention in _CONVENTION_PREFIX:
        source = jobs[jobs["status"] == "completed"]
        prefix = _CONVENTION_PREFIX[convention]
    else:
        source = epochs[epochs["status"] == "completed"] if "status" in epochs.columns else epochs.iloc[0:0]
        prefix = ""
    out = source.reindex(columns=list(ROW_COLUMNS)).copy()
    for metric in TABLE_METRICS:
        column = prefix + metric
        out[metric] = source[column].astype(float) if column in source.columns else math.nan
    return out.reset_index(drop=True)


def with_shared_level_zero(frame: pd.DataFrame) -> pd.DataFrame:
    """Copy the level-0 rows (``aug_type == "none"``) into every aug-type table of their data.

    ``frame`` needs ``data``, ``setting``, ``aug_type``; the result has ``aug_type`` set to the
    table each row belongs to. Tables present for a (data, setting) are the non-zero types
    there; where there is none, the level-0 rows keep the table ``none``.
    """
    zero = frame["aug_type"] == "none"
    parts = [frame[~zero]]
    nonzero = frame[~zero]
    for (data, setting), rows in frame[zero].groupby(["data", "setting"], dropna=False, sort=False):
        present = nonzero[(nonzero["data"] == data) & (nonzero["setting"] == setting)]["aug_type"]
        tables = sorted(set(present) - {"mixed"}) or ["none"]
        parts.extend(rows.assign(aug_type=table) for table in tables)
    return pd.concat(parts, ignore_index=True)


def cell_stats(long: pd.DataFrame, keys: list[str], *, sort: bool) -> pd.DataFrame:
    """Median, min, max, value and job counts of ``long['value']`` per ``keys`` (one row per cell)."""
    cells = long.groupby(keys, dropna=False, sort=sort)
    stats = cells["value"].agg(["median", "min", "max", "count"]).rename(columns={"count": "n_values"})
    stats["n_jobs"] = cells["job_dir"].nunique()
    return stats.reset_index()


def cells_by_convention(
    rows_of: Callable[[str], pd.DataFrame],
    id_vars: Sequence[str],
    keys: Sequence[str],
    conventions: Sequence[str],
    *,
    sort: bool,
) -> pd.DataFrame | None:
    """:func:`cell_stats` of every metric per ``keys`` in each convention, stacked with a ``convention`` column.

    ``rows_of(convention)`` gives the values to take medians of (:func:`convention_rows`, or the
    VCP members' share of it), ``id_vars`` its non-metric columns. ``None`` when no convention
    has a value. The one melt-and-aggregate of both the paper's tables (:func:`summarize`) and
    the VCP view (:func:`~weightshare.report.vcp.summarize_vcp`).
    """
    frames = []
    for convention in conventions:
        rows = rows_of(convention)
        if rows.empty:
            continue
        long = rows.melt(id_vars=list(id_vars), value_vars=list(TABLE_METRICS), var_name="metric")
        long = long.dropna(subset=["value"])
        if long.empty:
            continue
        frames.append(cell_stats(long, [*keys, "metric"], sort=sort).assign(convention=convention))
    return pd.concat(frames, ignore_index=True) if frames else None


def summarize(
    jobs: pd.DataFrame,
    epochs: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    conventions: tuple[str, ...] = tuple(CONVENTIONS),
) -> pd.DataFrame:
    """The long table (columns :data:`LONG_COLUMNS`) of every cell in every convention."""
    table = cells_by_convention(
        lambda convention: with_shared_level_zero(convention_rows(jobs, epochs, convention)),
        ROW_COLUMNS,
        CELL,
        conventions,
        sort=False,
    )
    if table is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in LONG_COLUMNS})
    table = table.rename(columns={"aug_level": "level"})
    table["level_key"] = level_key(table["level"])
    if reference is not None and not reference.empty:
        table = table.merge(reference, on=["data", "aug_type", "level_key", "model", "metric"], how="left")
    else:
        table["paper"] = math.nan
    table["diff"] = table["median"] - table["paper"]
    order = {c: i for i, c in enumerate(CONVENTIONS)}
    metric_rank = {m: i for i, m in enumerate(TABLE_METRICS)}
    table = table.assign(
        _c=table["convention"].map(order),
        _m=table["metric"].map(metric_rank),
        _model=table["model"].map({m: i for i, m in enumerate(model_order(table["model"]))}),
    ).sort_values(["_c", "data", "setting", "aug_type", "level", "_model", "_m"], na_position="last")
    return table[LONG_COLUMNS].reset_index(drop=True)


def table_keys(long: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The (data, aug_type, setting) tables present, in a stable order (translate first)."""
    type_rank = {"translate": 0, "rotate": 1, "noise": 2, "edge_noise": 3, "none": 4}
    keys = long[["data", "aug_type", "setting"]].drop_duplicates().itertuples(index=False, name=None)
    return sorted(keys, key=lambda k: (k[0], type_rank.get(k[1], 5), k[1], k[2]))


def wide_cells(cells: pd.DataFrame, index: str, models: Sequence[str]) -> pd.DataFrame:
    """One table's cells in the paper's layout: a row per value of ``index``, column groups per model.

    ``cells``: the long-frame rows of one table and convention (:func:`summarize`, or the VCP
    long frame with ``index="connectivity"``). Per model of ``models`` that has cells:
    ``<model>/n``, ``<model>/<metric>`` (medians; the paper's metrics always, others where
    present) and, where ``cells`` carries paper values, ``<model>/<metric>/paper`` and
    ``/diff`` for :data:`PAPER_METRICS`; ``/diff`` is empty where the cell is not
    ``comparable`` (measured under another budget than the protocol's, :mod:`.budget`).
    Rows join on :func:`format_level` strings, so the NaN
    level of ``mixed`` joins too (and sorts last).
    """
    values = sorted(cells[index].astype(float).unique(), key=lambda v: (math.isnan(v), v))
    wide = pd.DataFrame({index: values})
    keys = wide[index].map(format_level)
    cells = cells.assign(_key=cells[index].astype(float).map(format_level))
    for model in models:
        by_model = cells[cells["model"] == model]
        if by_model.empty:
            continue
        wide[f"{model}/n"] = keys.map(by_model.groupby("_key")["n_jobs"].max()).astype("Int64")
        for metric in TABLE_METRICS:
            rows = by_model[by_model["metric"] == metric].set_index("_key")
            if rows.empty and metric not in PAPER_METRICS:
                continue
            wide[f"{model}/{metric}"] = keys.map(rows["median"]).astype(float)
            if metric in PAPER_METRICS and "paper" in rows.columns:
                wide[f"{model}/{metric}/paper"] = keys.map(rows["paper"]).astype(float)
                diff = rows["diff"]
                if "comparable" in rows.columns:  # measured under another budget: no difference
                    diff = diff.where(rows["comparable"].astype(bool))
                wide[f"{model}/{metric}/diff"] = keys.map(diff).astype(float)
    return wide


def wide_table(long: pd.DataFrame, data: str, aug_type: str, setting: str, convention: str) -> pd.DataFrame:
    """One of the paper's tables (documented in the module docstring); empty when it has no cell."""
    cells = long[
        (long["data"] == data)
        & (long["aug_type"] == aug_type)
        & (long["setting"] == setting)
        & (long["convention"] == convention)
    ]
    return wide_cells(cells, "level", model_order(cells["model"]))


def duplicate_folds(jobs: pd.DataFrame) -> pd.DataFrame:
    """Completed jobs that share data, setting, model, aug type, level, fold and seed.

    They are all counted (they may differ in something the identity does not record, like the
    learning rate of a search), but a cell with more jobs than folds deserves a warning.
    """
    completed = jobs[jobs["status"] == "completed"]
    keys = [*CELL, "fold", "seed"]
    counts = completed.groupby(keys, dropna=False).size().rename("n_jobs").reset_index()
    return counts[counts["n_jobs"] > 1].reset_index(drop=True)


# ----------------------------------------------------------------------------- Markdown


def format_level(level: float) -> str:
    return "mixed" if level is None or math.isnan(level) else f"{level:.2f}"


def _cell(value: float, paper: float | None, diff: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    text = f"{value:.4f}"
    if paper is not None and not math.isnan(paper):
        # a paper value without a difference: measured under another budget (not comparable)
        shown = "n/c" if diff is None or math.isnan(diff) else f"{diff:+.4f}"
        text += f" ({paper:.4f}, {shown})"
    return text


def markdown_table(wide: pd.DataFrame, *, index: str = "level", models: list[str] | None = None) -> str:
    """A wide table as Markdown: cells ``measured (paper, measured - paper)`` where paper columns exist.

    ``index`` names the row column (``level``, or ``connectivity`` for the VCP view), ``models``
    the column groups in order (default: those present, CNN first).
    """
    present = [c.split("/")[0] for c in wide.columns if c.endswith("/n")]
    models = [m for m in models if m in present] if models is not None else model_order(present)
    header = [index]
    columns: list[tuple[str, str | None]] = []
    for model in models:
        header.append(f"{model.upper()} n")
        columns.append((f"{model}/n", None))
        for metric in TABLE_METRICS:
            column = f"{model}/{metric}"
            if column in wide.columns and wide[column].notna().any():
                header.append(f"{model.upper()} {METRIC_LABELS[metric]}")
                columns.append((column, metric))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in wide.to_dict("records"):
        cells = [format_level(row[index])]
        for column, metric in columns:
            if metric is None:
                n = row[column]
                cells.append("0" if n is pd.NA or n is None else str(int(n)))
            else:
                cells.append(_cell(row[column], row.get(f"{column}/paper"), row.get(f"{column}/diff")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def slug(text: str) -> str:
    """A file-name-safe form of a label ("connectivity=0.5" -> "connectivity-0.5")."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")
