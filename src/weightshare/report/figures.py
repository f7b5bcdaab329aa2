"""The sweep's figures from run directories alone (no W&B, no TensorBoard): the paper's Figures 3-6.

- :func:`accuracy_figure` (Figures 3-4): x = augmentation level, y = train, validation
  and translated-validation accuracy, CNN vs FCN (one colour per model, a line style and
  marker per metric), median over folds with a min-max band where there are several folds;
  one figure per data x augmentation type.
- :func:`filter_distance_figure` (Figure 5, and the weight-divergence follow-up's figures):
  every filter distance one FCN layer logged vs epoch, a panel per (target, kind): the
  neighbouring filters at each radius (``fd/<layer>/r<r>/<kind>``), the original shared
  filter of a layer converted from a CNN (``fd/<layer>/to_ref/<kind>``) and the layer's mean
  filter (``fd/<layer>/to_mean/<kind>``), kinds ``euclid``, ``cosine``, ``euclid_raw`` and any
  other; one line per augmentation level (median over folds at each epoch; folds that stopped
  early drop out of later epochs). Epochs are 0-based as in ``metrics.csv``; the value at
  initialisation (``results.json`` ``init``) is the point ``init`` left of epoch 0. Every
  free layer gets a figure by default. Axes start at zero and each panel notes the largest
  change from initialisation (a 0.03 % drift must not look like a fall).
- :func:`quadrant_swap_figure` (Figure 6): CNN vs FCN, clean vs quadrant-swapped validation
  accuracy, median over folds with min-max error bars where there are several folds.
- :func:`vcp_figure` (Figures C.1-C.2): FCN accuracy vs fraction of removed connections, median
  over folds with a min-max band, the CNN and FCN at connectivity 0 as reference lines.

A sweep measured under another budget than the protocol's carries the differences
(:mod:`.budget`) as the last line of every title (``subtitles``).

Entry point: :func:`plot_sweep` ``(jobs_frame, epochs_frame, out_dir) -> list[Path]``; the
``*_figure`` builders return the figure unsaved (tests read their lines). Inputs are the frames
of :mod:`.collect` (``jobs`` and ``epochs``, columns documented there). One run's curves are
:mod:`.figures_runs`; the drawing parts both share are :mod:`.figure_style`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from weightshare.errors import ConfigError
from weightshare.report.budget import subtitle_for
from weightshare.report.figure_style import (
    EPOCH_LABEL,
    INIT_X,
    LEGEND_HANDLE_LENGTH,
    VARIANT_STYLES,
    count_folds,
    epoch_axis,
    fd_columns,
    kind_label,
    kind_rank,
    median_band,
    model_color,
    panel_grid,
    png_name,
    save_png,
    side_legend,
    spread_label,
    style_axes,
    target_rank,
    with_subtitle,
    zero_based_with_change_note,
)
from weightshare.report.reference import level_key
from weightshare.report.tables import (
    CONVENTIONS,
    convention_rows,
    format_level,
    model_order,
    slug,
    with_shared_level_zero,
)
from weightshare.report.vcp import REFERENCE_MODEL, VCP_MODEL, covered_tables, vcp_groups, vcp_members, vcp_rows

__all__ = [
    "accuracy_figure",
    "fd_columns",
    "filter_distance_figure",
    "plot_sweep",
    "quadrant_swap_figure",
    "sweep_figures",
    "vcp_figure",
]

ACCURACY_LINES = (
    ("val/acc", "validation"),
    ("val/translate/acc", "translated validation"),
    ("train/acc", "train"),
)


def accuracy_figure(rows: pd.DataFrame, title: str, xlabel: str) -> Figure:
    """Figures 3-4: accuracy vs level, one colour per model, one line style and marker per metric.

    ``rows``: one table's :func:`~weightshare.report.tables.convention_rows` (per fold, or per
    epoch row), with numeric ``aug_level``. Lines are labelled ``"<MODEL> <metric label>"``; a
    min-max band is drawn only at points of more than one fold, and the y-label mentions the
    band only when there is one.
    """
    fig = Figure(figsize=(8.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    models = model_order(rows["model"])
    banded = False
    for model in models:
        color = model_color(model, models)
        per_model = rows[rows["model"] == model]
        for metric, label in ACCURACY_LINES:
            linestyle, marker = VARIANT_STYLES[metric]
            banded |= median_band(
                ax, per_model, "aug_level", metric, linestyle, color, f"{model.upper()} {label}", marker
            )
    levels = sorted(rows["aug_level"].dropna().unique())
    ax.set_xticks(levels, [format_level(v) for v in levels])
    style_axes(ax, title, xlabel, spread_label("accuracy", banded, count_folds(rows)))
    ax.legend(fontsize=9, loc="best", handlelength=LEGEND_HANDLE_LENGTH)
    return fig


def filter_distance_figure(
    epochs: pd.DataFrame,
    init: pd.DataFrame,
    layer: str,
    title: str,
    *,
    line_by: str = "aug_level",
    legend_title: str = "aug level",
) -> Figure:
    """Figure 5 (and the divergence follow-up's) for one layer: a panel per (target, kind), a line per level.

    ``epochs``: epoch rows of one table's FCN jobs (``aug_level``, ``epoch``, ``fd/...``
    columns); ``init``: their jobs' rows with ``aug_level`` and ``init/fd/...`` columns. Each
    line is the median over folds at each (0-based) epoch, preceded by the median value at
    initialisation at x = :data:`~.figure_style.INIT_X` (ticked ``init``). Panels: columns are
    targets (each radius, then ``to_ref``, then ``to_mean``), rows are kinds (``euclid``,
    ``cosine``, ``euclid_raw``, ...); a (target, kind)
    with no value in ``epochs`` has no panel. Panels are titled ``"<layer>, radius <r>: <kind>"``,
    ``"<layer>, to original shared filter: <kind>"``, ``"<layer>, to mean filter: <kind>"``.
    ``line_by`` names the column that tells the lines apart (``connectivity`` in the VCP view).
    Each panel's y axis starts at zero, with the largest change from initialisation noted.
    """
    specs = [s for s in fd_columns(list(epochs.columns)).get(layer, []) if epochs[s.column].notna().any()]
    if not specs:
        raise ConfigError("layer", layer, "a layer with filter distances in these epoch rows")
    targets = sorted({s.target for s in specs}, key=target_rank)
    kinds = sorted({s.kind for s in specs}, key=kind_rank)
    fig = Figure(figsize=(4.8 * len(targets) + 1.2, 3.8 * len(kinds)), layout="constrained")
    panels = panel_grid(fig, kinds, targets, {(s.kind, s.target) for s in specs})
    levels = sorted(epochs[line_by].dropna().unique())
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, max(len(levels), 1)))
    for spec in specs:
        ax = panels[(spec.kind, spec.target)]
        column = spec.column
        drawn: list[tuple[float, list[float]]] = []
        for level, color in zip(levels, colors):
            curve = epochs[epochs[line_by] == level].groupby("epoch")[column].median().dropna()
            x, y = list(curve.index), list(curve.to_numpy())
            init_column = f"init/{column}"
            start = math.nan
            if init_column in init.columns:
                start = init.loc[init[line_by] == level, init_column].median()
                if not math.isnan(start):
                    x, y = [INIT_X, *x], [start, *y]
            if x:
                ax.plot(x, y, color=color, linewidth=1.6, marker="o", markersize=3, label=format_level(level))
                drawn.append((start, list(curve.to_numpy())))
        style_axes(
            ax,
            f"{layer}, {spec.target_title}: {spec.kind}",
            EPOCH_LABEL,
            f"mean {kind_label(spec.kind)} distance",
        )
        epoch_axis(ax)
        zero_based_with_change_note(ax, drawn)
    entries: dict[str, object] = {}
    for ax in panels.values():  # every level, even one missing from the first panel
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    labels = sorted(entries, key=lambda text: float(text) if text != "mixed" else math.inf)
    handles = [entries[label] for label in labels]
    fig.legend(handles, labels, title=legend_title, fontsize=9, title_fontsize=10, loc="outside right upper")
    fig.suptitle(title, fontsize=13)
    return fig


def quadrant_swap_figure(rows: pd.DataFrame, title: str) -> Figure:
    """Figure 6: per model, clean vs quadrant-swapped validation accuracy (median, min-max bars)."""
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.add_subplot()
    models = model_order(rows["model"])
    x = np.arange(len(models))
    width = 0.38
    bars_spec = (
        ("val/acc", "clean validation", "tab:gray"),
        ("val/quadrant_swap/acc", "quadrant-swapped validation", "tab:red"),
    )
    n_folds = count_folds(rows)
    for offset, (metric, label, color) in zip((-width / 2, width / 2), bars_spec):
        stats = rows.groupby("model")[metric].agg(["median", "min", "max"]).reindex(models)
        errors = None
        if n_folds > 1:  # one fold has no spread: no error bars that are not there
            errors = np.vstack([stats["median"] - stats["min"], stats["max"] - stats["median"]])
        bars = ax.bar(x + offset, stats["median"], width, yerr=errors, capsize=4, color=color, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=9, padding=2)
    ax.set_xticks(x, [m.upper() for m in models])
    # headroom for a one-row legend above the bars: "upper right" covered a 0.96 bar's label
    ax.set_ylim(0, 1.22)
    ax.set_yticks(np.linspace(0, 1, 6))
    style_axes(ax, title, "model", spread_label("accuracy", n_folds > 1, n_folds, spread="bars"))
    ax.legend(fontsize=9, loc="upper center", ncol=2)
    return fig


def vcp_figure(rows: pd.DataFrame, title: str) -> Figure:
    """Figures C.1-C.2: FCN accuracy vs fraction of removed connections, reference lines at 0.

    ``rows``: one VCP group's :func:`~weightshare.report.vcp.vcp_rows` (FCN rows at every
    connectivity, CNN rows at connectivity 0). FCN lines ``"FCN <metric label>"`` are the median
    over folds at each connectivity with a min-max band; horizontal reference lines
    ``"CNN <metric label>, connectivity 0 (reference)"`` and ``"FCN <metric label>, connectivity
    0 (reference)"`` are the medians of the connectivity-0 runs, where the group has them.
    """
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.add_subplot()
    fcn = rows[rows["model"] == VCP_MODEL]
    color = model_color(VCP_MODEL, [VCP_MODEL])
    banded = False
    for metric, label in ACCURACY_LINES:
        linestyle, marker = VARIANT_STYLES[metric]
        banded |= median_band(ax, fcn, "connectivity", metric, linestyle, color, f"{VCP_MODEL.upper()} {label}", marker)
    for model, alpha in ((REFERENCE_MODEL, 0.9), (VCP_MODEL, 0.5)):
        at_zero = rows[(rows["model"] == model) & (rows["connectivity"] == 0)]
        for metric, label in ACCURACY_LINES:
            linestyle = VARIANT_STYLES[metric][0]
            value = at_zero[metric].median()
            if not math.isnan(value):
                ax.axhline(
                    value,
                    color=model_color(model, [model]),
                    linestyle=linestyle,
                    linewidth=1.1,
                    alpha=alpha,
                    label=f"{model.upper()} {label}, connectivity 0 (reference)",
                )
    values = sorted(fcn["connectivity"].dropna().unique())
    ax.set_xticks(values, [format_level(v) for v in values])
    style_axes(
        ax,
        title,
        "fraction of connections removed (model.connectivity)",
        spread_label("accuracy", banded, count_folds(fcn)),
    )
    side_legend(ax)
    return fig


def sweep_figures(
    jobs_frame: pd.DataFrame,
    epochs_frame: pd.DataFrame,
    *,
    convention: str = "early_stopped",
    fd_layers: str = "all",
    quadrant: tuple[str, float] = ("none", 0.0),
    subtitles: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, Figure]]:
    """``(file name, figure)`` of every sweep figure, one at a time (see :func:`plot_sweep`)."""
    subtitles = subtitles or {}
    if fd_layers not in ("first", "all"):
        raise ConfigError("fd_layers", fd_layers, "first or all")
    if convention not in CONVENTIONS:
        raise ConfigError("convention", convention, " or ".join(CONVENTIONS))
    rows = convention_rows(jobs_frame, epochs_frame, convention)
    label = convention.replace("_", "-")
    covered = covered_tables(jobs_frame)
    if not rows.empty:
        shared = with_shared_level_zero(rows)
        for (data, setting, aug_type), table in shared.groupby(["data", "setting", "aug_type"], sort=True):
            if aug_type == "mixed":
                continue  # no single level to put on the x axis
            if (data, aug_type, setting) in covered:
                continue  # one connectivity value of a VCP sweep: drawn in its VCP figure
            title = f"{data}: accuracy vs {aug_type} level ({label})" + (f"\n{setting}" if setting else "")
            title = with_subtitle(title, subtitle_for(subtitles, data))
            yield (
                png_name("accuracy", data, aug_type, setting),
                accuracy_figure(table, title, f"{aug_type} augmentation level"),
            )
        chosen = rows[
            (rows["aug_type"] == quadrant[0]) & (level_key(rows["aug_level"]) == level_key(quadrant[1])).fillna(False)
        ]
        runs = "no augmentation" if quadrant[0] == "none" else f"{quadrant[0]} {format_level(quadrant[1])}"
        for (data, setting), table in chosen.groupby(["data", "setting"], sort=True):
            if table["val/quadrant_swap/acc"].notna().any():
                title = f"{data}: quadrant swap, {runs} ({label})" + (f"\n{setting}" if setting else "")
                title = with_subtitle(title, subtitle_for(subtitles, data))
                yield png_name("quadrant_swap", data, setting), quadrant_swap_figure(table, title)
    groups = vcp_groups(jobs_frame)
    if groups:
        all_vcp = vcp_rows(jobs_frame, epochs_frame, convention)
        for group in groups:
            table = group.select(all_vcp)
            if table.empty:
                continue
            title = (
                f"{group.data}: accuracy vs removed connections, {group.aug_type} {format_level(group.level)} ({label})"
            )
            title += f"\n{group.setting}" if group.setting else ""
            title = with_subtitle(title, subtitle_for(subtitles, group.data))
            yield group.file_stem() + ".png", vcp_figure(table, title)
    yield from _filter_distance_figures(jobs_frame, epochs_frame, fd_layers, subtitles)


def _filter_distance_figures(
    jobs: pd.DataFrame, epochs: pd.DataFrame, fd_layers: str, subtitles: Mapping[str, str]
) -> Iterator[tuple[str, Figure]]:
    layers = fd_columns(list(epochs.columns))
    if not layers or "status" not in epochs.columns:
        return
    columns = [s.column for specs in layers.values() for s in specs]
    keys = ["job_dir", "data", "setting", "aug_type", "aug_level", "model"]
    done = epochs[epochs["status"] == "completed"]
    done = done[done[columns].notna().any(axis=1)]  # CNN rows carry no filter distance
    if done.empty:
        return
    curves = with_shared_level_zero(done[[*keys, "epoch", *columns]])
    init_columns = [f"init/{c}" for c in columns if f"init/{c}" in jobs.columns]
    completed = jobs.loc[jobs["status"] == "completed", [*keys, "connectivity", *init_columns]]
    init = with_shared_level_zero(completed)
    covered = covered_tables(jobs)

    def chosen(table: pd.DataFrame) -> list[str]:
        present = [
            layer for layer, specs in layers.items() if table[[s.column for s in specs]].notna().to_numpy().any()
        ]
        return present[:1] if fd_layers == "first" else present

    for (data, setting, aug_type, model), table in curves.groupby(["data", "setting", "aug_type", "model"]):
        if aug_type == "mixed" or (data, aug_type, setting) in covered:
            continue  # a single connectivity value of a VCP sweep: drawn in its VCP figure below
        job_init = init[init["job_dir"].isin(table["job_dir"]) & (init["aug_type"] == aug_type)]
        for layer in chosen(table):
            title = f"{data} {model.upper()}: filter distances, {aug_type} augmentation" + (
                f"\n{setting}" if setting else ""
            )
            title = with_subtitle(title, subtitle_for(subtitles, data))
            yield (
                png_name("filter_distance", data, aug_type, model, layer, setting),
                filter_distance_figure(table, job_init, layer, title),
            )
    members = vcp_members(jobs)
    members = members[members["model"] == VCP_MODEL]
    for group in vcp_groups(jobs):
        in_group = group.select(members)
        table = done[done["job_dir"].isin(in_group["job_dir"])].merge(
            in_group[["job_dir", "connectivity"]], on="job_dir"
        )
        if table.empty:
            continue
        job_init = completed[completed["job_dir"].isin(in_group["job_dir"])]
        for layer in chosen(table):
            title = (
                f"{group.data} FCN: filter distances vs removed connections, {group.aug_type} "
                f"{format_level(group.level)}" + (f"\n{group.setting}" if group.setting else "")
            )
            title = with_subtitle(title, subtitle_for(subtitles, group.data))
            yield (
                f"filter_distance_{group.file_stem()}_{slug(layer)}.png",
                filter_distance_figure(
                    table, job_init, layer, title, line_by="connectivity", legend_title="connectivity"
                ),
            )


def plot_sweep(
    jobs_frame: pd.DataFrame,
    epochs_frame: pd.DataFrame,
    out_dir: Path | str,
    *,
    convention: str = "early_stopped",
    fd_layers: str = "all",
    quadrant: tuple[str, float] = ("none", 0.0),
    subtitles: Mapping[str, str] | None = None,
) -> list[Path]:
    """Every sweep figure as PNG into ``out_dir``; returns the files written.

    Files: ``accuracy_<data>_<aug_type>[_<setting>].png`` (Figures 3-4; none for the single
    connectivity values of a VCP sweep), ``quadrant_swap_<data>[_<setting>].png`` (Figure 6),
    ``vcp_<data>_<aug_type>_<level>[_<setting>].png`` (Figures C.1-C.2, per VCP group of
    :mod:`weightshare.report.vcp`),
    ``filter_distance_<data>_<aug_type>_<model>_<layer>[_<setting>].png`` (Figure 5 and the
    divergence follow-up: neighbours, original shared filter, mean filter; a line per level),
    ``filter_distance_vcp_<data>_<aug_type>_<level>[_<setting>]_<layer>.png`` (a VCP group's
    FCNs, a line per connectivity, instead of one figure per connectivity value).
    ``convention`` picks the values of the accuracy and quadrant figures (see
    :data:`~weightshare.report.tables.CONVENTIONS`); ``fd_layers`` is ``all`` (every free layer,
    the default) or ``first`` (the paper's Figure 5); ``subtitles`` maps a data set to the
    reduced-budget line of its figures (:func:`~weightshare.report.budget.budget_subtitles`);
    ``quadrant`` is the (aug_type, level) of the runs in the quadrant-swap chart
    (the level-0 runs by default). Only completed jobs are drawn.
    """
    out = Path(out_dir)
    return [
        save_png(fig, out / name)
        for name, fig in sweep_figures(
            jobs_frame, epochs_frame, convention=convention, fd_layers=fd_layers, quadrant=quadrant, subtitles=subtitles
        )
    ]
