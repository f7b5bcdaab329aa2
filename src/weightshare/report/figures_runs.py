"""One run's figures from its directory alone: training curves and filter distances.

:func:`run_figures` draws one run's training curves (accuracies of every evaluation variant and
losses vs epoch, the early-stopping epoch marked) and, when it logged any, its filter distances
(to neighbours, to the original shared filter, to the mean filter); :func:`plot_run`
``(run_dir, out_dir) -> list[Path]`` writes them as PNG. The sweep's figures are :mod:`.figures`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from weightshare.augment.validate import EVAL_VARIANTS
from weightshare.errors import ConfigError
from weightshare.report.budget import KNOWN_COLUMN, budget_differences, budget_subtitles, subtitle_for
from weightshare.report.collect import read_metrics, read_results, setting_label
from weightshare.report.figure_style import (
    EPOCH_LABEL,
    GROUP_ORDER,
    GROUP_TITLES,
    INIT_X,
    RADIUS_STYLES,
    VARIANT_STYLES,
    epoch_axis,
    fd_columns,
    kind_label,
    kind_rank,
    panel_grid,
    save_png,
    side_legend,
    style_axes,
    with_subtitle,
    zero_based_with_change_note,
)
from weightshare.report.tables import format_level

VARIANT_NAMES = tuple(v for v in EVAL_VARIANTS if v != "clean")


def _run_title(result: dict) -> str:
    if result.get("data") is None:
        return Path(result["job_dir"]).name
    level = result.get("aug_level")
    parts = [str(result.get("data")), str(result.get("model")), str(result.get("aug_type"))]
    if isinstance(level, (int, float)) and not math.isnan(float(level)):
        parts.append(format_level(float(level)))
    if result.get("fold") is not None:
        parts.append(f"fold {result['fold']}")
    setting = setting_label(result)  # e.g. init_from=cnn for a run unshared from a CNN
    return " ".join(parts) + (f", {setting}" if setting else "") + f" ({result['status']})"


def _budget_line(result: dict) -> str:
    """The run's differences to the protocol's budget (:mod:`.budget`), folds aside: one run is one fold."""
    if result.get(KNOWN_COLUMN) != 1.0:
        return ""
    differences = [d for d in budget_differences(pd.DataFrame([result])) if d.key != "data.fold"]
    return subtitle_for(budget_subtitles(differences), str(result.get("data")))


def run_figures(run_dir: Path | str) -> dict[str, Figure]:
    """``{"training_curves": fig[, "filter_distance": fig]}`` of one run (see :func:`plot_run`)."""
    run_dir = Path(run_dir)
    metrics, problem = read_metrics(run_dir)
    if metrics is None or metrics.empty:
        raise ConfigError(
            "RUN_DIR", str(run_dir), f"a run directory with a readable metrics.csv ({problem or 'empty'})"
        )
    result = read_results(run_dir)
    title = with_subtitle(_run_title(result), _budget_line(result))
    x = metrics["epoch"]  # 0-based, as in metrics.csv
    # markers keep short runs visible (a single epoch is one point, not a line)
    marker = "o" if len(metrics) <= 30 else None
    best = result.get("best_epoch")
    figures: dict[str, Figure] = {}

    fig = Figure(figsize=(13, 5), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    for column, label in (("train/acc", "train"), ("val/acc", "validation")):
        if column in metrics.columns:
            ax_acc.plot(x, metrics[column], linewidth=1.8, marker=marker, label=label)
    for variant in VARIANT_NAMES:
        column = f"val/{variant}/acc"
        if column in metrics.columns and metrics[column].notna().any():
            linestyle, variant_marker = VARIANT_STYLES.get(column, ("--", "o"))
            ax_acc.plot(
                x,
                metrics[column],
                linestyle=linestyle,
                linewidth=1.3,
                marker=variant_marker if marker else None,
                markersize=4,
                label=f"validation, {variant}",
            )
    for column, label in (("train/loss", "train"), ("val/loss", "validation")):
        if column in metrics.columns:
            ax_loss.plot(x, metrics[column], linewidth=1.8, marker=marker, label=label)
    panels = (("accuracy", "accuracy"), ("loss", "cross-entropy loss"))
    for ax, (name, ylabel) in zip((ax_acc, ax_loss), panels):
        if isinstance(best, (int, float)) and not math.isnan(best):
            ax.axvline(best, color="gray", linestyle=":", label="early-stopping epoch")
        style_axes(ax, name, EPOCH_LABEL, ylabel)
        epoch_axis(ax)
        side_legend(ax)
    fig.suptitle(title, fontsize=13)
    figures["training_curves"] = fig

    figure = _run_filter_distance_figure(metrics, result, title)
    if figure is not None:
        figures["filter_distance"] = figure
    return figures


def _run_filter_distance_figure(metrics: pd.DataFrame, result: dict, title: str) -> Figure | None:
    """One run's filter distances: a panel per (target group, kind), a line per layer (and radius).

    Rows of panels: neighbouring filters (a line per layer and radius, line style by radius),
    the original shared filter (``to_ref``: a run unshared from a CNN) and the layer's mean
    filter (``to_mean``); columns: kinds (``euclid``, ``cosine``, ``euclid_raw``, ...). Epochs
    are 0-based as in ``metrics.csv``; the value at initialisation from ``results.json``
    ``init``, where it has one, is the point ``init`` left of epoch 0. Axes start at zero, with
    the largest change from initialisation noted. ``None`` when the run logged no filter
    distance (a CNN).
    """
    layers = fd_columns(list(metrics.columns))
    specs = [s for items in layers.values() for s in items if metrics[s.column].notna().any()]
    if not specs:
        return None
    groups = [g for g in GROUP_ORDER if any(s.group == g for s in specs)]
    kinds = sorted({s.kind for s in specs}, key=kind_rank)
    fig = Figure(figsize=(6.0 * len(kinds) + 1.5, 4.4 * len(groups)), layout="constrained")
    panels = panel_grid(fig, groups, kinds, {(s.group, s.kind) for s in specs})
    layer_names = list(layers)
    radii = sorted({s.radius for s in specs if s.radius is not None})
    x = list(metrics["epoch"])
    drawn: dict[tuple[str, str], list[tuple[float, list[float]]]] = {}
    for spec in specs:
        xs, ys = x, list(metrics[spec.column])
        start = result.get(f"init/{spec.column}")
        start = float(start) if isinstance(start, (int, float)) else math.nan
        drawn.setdefault((spec.group, spec.kind), []).append((start, ys))
        if not math.isnan(start):
            xs, ys = [INIT_X, *xs], [start, *ys]
        style, label = "-", spec.layer
        if spec.radius is not None:
            style = RADIUS_STYLES[radii.index(spec.radius) % len(RADIUS_STYLES)]
            label = f"{spec.layer} r{spec.radius}"
        panels[(spec.group, spec.kind)].plot(
            xs, ys, linewidth=1.6, linestyle=style, color=f"C{layer_names.index(spec.layer) % 10}", label=label
        )
    for (group, kind), ax in panels.items():
        style_axes(
            ax,
            f"mean {kind} distance {GROUP_TITLES[group]}",
            EPOCH_LABEL,
            f"{kind_label(kind)} distance",
        )
        epoch_axis(ax)
        zero_based_with_change_note(ax, drawn[(group, kind)])
        side_legend(ax)
    fig.suptitle(title, fontsize=13)
    return fig


def plot_run(run_dir: Path | str, out_dir: Path | str) -> list[Path]:
    """One run's curves from its ``metrics.csv`` (and ``results.json`` when readable).

    Writes ``training_curves.png`` (accuracies of every evaluation variant and losses vs the
    0-based epoch of ``metrics.csv``, the early-stopping epoch marked) and, when the run logged
    filter distances, ``filter_distance.png`` (every layer: neighbours at every radius, the
    original shared filter of a run unshared from a CNN, the mean filter; the value at
    initialisation is the point ``init`` left of epoch 0).
    """
    out = Path(out_dir)
    return [save_png(fig, out / f"{name}.png") for name, fig in run_figures(run_dir).items()]
