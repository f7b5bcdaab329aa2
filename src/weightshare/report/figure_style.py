"""Drawing parts shared by the sweep figures (:mod:`.figures`) and one run's figures (:mod:`.figures_runs`).

Axis style, file names, the min-max band, panel grids and the parsing of filter-distance
column names (``fd/<layer>/<target>/<kind>``) live here once, so both kinds of figure look
and read the same. Conventions every figure follows:

- epochs are 0-based as in ``metrics.csv`` (epoch 0 = the first trained epoch); the value at
  initialisation is its own point at x = :data:`INIT_X`, ticked ``init`` (:func:`epoch_axis`);
- one colour per model (:func:`model_color`), one line style and marker per metric or variant
  (:data:`VARIANT_STYLES`), legends long enough to show the dashes;
- a min-max band only where more than one fold was pooled, and the y-label says so only then
  (:func:`median_band`, :func:`spread_label`);
- distances from zero, with the largest relative change from initialisation written in the
  panel (:func:`zero_based_with_change_note`): an axis autoscaled to 0.10875-0.10905 makes a
  0.03 % change look dramatic;
- a reduced budget (:mod:`.budget`) in the title's last line (:func:`with_subtitle`).

Figures are built on :class:`matplotlib.figure.Figure` directly rather than through ``pyplot``:
that renders with the Agg backend whatever backend the caller
selected, keeps no global figure registry (nothing to close, nothing leaks in a long report)
and is safe to call from a worker thread.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from weightshare.report.tables import slug

DPI = 120
# fd/<layer>/<target>/<kind>: target r<radius> (neighbours on the ring), to_ref (the original
# shared filter), to_mean (the layer's mean filter); kind euclid, cosine, euclid_raw, or any new one
FD_PATTERN = re.compile(r"^fd/(?P<layer>[^/]+)/(?P<target>r(?P<radius>\d+)|to_ref|to_mean)/(?P<kind>\w+)$")
KIND_ORDER = ("euclid", "cosine", "euclid_raw")
KIND_LABELS = {"euclid": "Euclidean", "cosine": "cosine", "euclid_raw": "raw Euclidean (/ ||W_ref||)"}
GROUP_ORDER = ("neighbours", "to_ref", "to_mean")
GROUP_TITLES = {
    "neighbours": "between neighbouring filters",
    "to_ref": "to the original shared filter",
    "to_mean": "to the layer's mean filter",
}
TARGET_TITLES = {"to_ref": "to original shared filter", "to_mean": "to mean filter"}
RADIUS_STYLES = ("-", "--", "-.", ":")
#: (line style, marker) per metric of the accuracy figures: told apart in a legend without colour
VARIANT_STYLES = {
    "val/acc": ("-", "o"),
    "val/translate/acc": ("--", "s"),
    "train/acc": (":", "^"),
    "val/rotate/acc": ("-.", "D"),
    "val/noise/acc": ((0, (5, 1, 1, 1, 1, 1)), "v"),
    "val/edge_noise/acc": ((0, (1, 1)), "P"),
    "val/quadrant_swap/acc": ((0, (8, 2)), "X"),
}
#: x position of the value at initialisation, left of epoch 0 (ticked "init")
INIT_X = -1
EPOCH_LABEL = "epoch (0 = first trained epoch)"
LEGEND_HANDLE_LENGTH = 3.5
MODEL_COLORS = {"cnn": "tab:blue", "fcn": "tab:orange"}
_EXTRA_COLORS = ("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def model_color(model: str, models: Sequence[str]) -> str:
    if model in MODEL_COLORS:
        return MODEL_COLORS[model]
    others = [m for m in models if m not in MODEL_COLORS]
    return _EXTRA_COLORS[others.index(model) % len(_EXTRA_COLORS)]


def natural_key(text: str) -> tuple:
    """conv2 before conv10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def save_png(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def style_axes(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=12)
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)


def _epoch_tick(value: float, _pos: int) -> str:
    return "init" if round(value) == INIT_X else f"{value:.0f}"


def epoch_axis(ax: Axes) -> None:
    """Whole-number epoch ticks, ``init`` at :data:`INIT_X`; a short run still spans a readable range.

    Call after drawing. When a line starts at :data:`INIT_X`, that tick is always there: a
    locator left alone ticks 0, 2, 4, ... on a longer run and the ``init`` point loses its label.
    """
    ax.xaxis.set_major_formatter(FuncFormatter(_epoch_tick))
    lo, hi = ax.get_xlim()
    if hi - lo < 2:
        mid = (lo + hi) / 2
        lo, hi = mid - 1, mid + 1
        ax.set_xlim(lo, hi)
    has_init = any(len(x) and min(x) <= INIT_X for x in (line.get_xdata() for line in ax.get_lines()))
    if not has_init:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return
    epochs = [t for t in MaxNLocator(integer=True).tick_values(0, hi) if 0 <= t <= hi]
    ax.set_xticks([INIT_X, *epochs])
    ax.set_xlim(lo, hi)


def median_band(
    ax: Axes,
    rows: pd.DataFrame,
    by: str,
    metric: str,
    linestyle: Any,
    color: Any,
    label: str,
    marker: str = "o",
) -> bool:
    """Median of ``metric`` per value of ``by`` as a line; a min-max band where several folds pooled.

    The folds of a point are its distinct ``job_dir`` values (rows without that column count
    one per row). A point of one fold has no spread to show, so no band is drawn there.
    Returns whether any band was drawn (the y-label should only then mention one).
    """
    values = rows[[by, metric] + (["job_dir"] if "job_dir" in rows.columns else [])].dropna(subset=[by, metric])
    if values.empty:
        return False
    grouped = values.groupby(by)
    stats = grouped[metric].agg(["median", "min", "max"])
    stats["folds"] = grouped["job_dir"].nunique() if "job_dir" in values.columns else grouped[metric].size()
    ax.plot(
        stats.index,
        stats["median"],
        linestyle=linestyle,
        marker=marker,
        markersize=6,
        color=color,
        linewidth=1.8,
        label=label,
    )
    spread = stats["folds"] > 1
    if not spread.any():
        return False
    ax.fill_between(
        stats.index, stats["min"], stats["max"], where=spread.to_numpy(), color=color, alpha=0.15, linewidth=0
    )
    return True


def spread_label(quantity: str, banded: bool, n_folds: int, spread: str = "band") -> str:
    """The y-label: ``"<quantity> (median over N folds, band: min-max)"`` only when a band is drawn."""
    if banded:
        return f"{quantity} (median over folds, {spread}: min-max)"
    if n_folds <= 1:
        return f"{quantity} (one fold)"
    return f"{quantity} (median over folds)"


def count_folds(rows: pd.DataFrame) -> int:
    """Largest number of distinct jobs (folds) behind one plotted point."""
    if "job_dir" not in rows.columns or rows.empty:
        return len(rows)
    keys = [c for c in ("model", "aug_level", "connectivity") if c in rows.columns]
    if not keys:
        return int(rows["job_dir"].nunique())
    return int(rows.groupby(keys, dropna=False)["job_dir"].nunique().max())


def with_subtitle(title: str, subtitle: str) -> str:
    """``title`` with the reduced-budget line under it (unchanged when there is none).

    Wrapped at 70 characters: the narrowest figure (the 7-inch quadrant-swap chart) cuts a
    longer line off at both edges.
    """
    return f"{title}\n" + textwrap.fill(subtitle, 70) if subtitle else title


def zero_based_with_change_note(ax: Axes, curves: Sequence[tuple[float, Sequence[float]]]) -> None:
    """Start the y axis at zero and write the largest change from initialisation in the panel.

    ``curves``: ``(value at init, later values)`` per drawn line (init NaN when not logged:
    the first value stands in). Relative (%) when the starting value is not ~0, absolute
    otherwise (distances to the original shared filter start at 0).
    """
    # headroom above the curves for the note, so it never covers a line
    ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1e-12) * 1.22)
    relative: list[float] = []
    absolute: list[float] = []
    for start, values in curves:
        finite = [v for v in values if v == v]
        if start != start:
            if not finite:
                continue
            start, finite = finite[0], finite[1:]
        if not finite:
            continue
        change = max((v - start for v in finite), key=abs)
        if abs(start) > 1e-9:
            relative.append(100.0 * change / start)
        else:
            absolute.append(change)
    parts = []
    if relative:
        parts.append(f"{max(relative, key=abs):+.2g} %")
    if absolute:
        parts.append(f"{max(absolute, key=abs):+.3g} (from 0)")
    if parts:
        ax.text(
            0.02,
            0.97,
            "axis from 0; largest change from init: " + ", ".join(parts),
            transform=ax.transAxes,
            verticalalignment="top",
            fontsize=8,
            color="0.25",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5},
        )


def side_legend(ax: Axes) -> None:
    """Legend right of the axes: curves of a run overlap wherever ``loc="best"`` would put it."""
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), handlelength=LEGEND_HANDLE_LENGTH)


def png_name(*parts: str) -> str:
    return "_".join(slug(p) for p in parts if p) + ".png"


@dataclass(frozen=True)
class FdSpec:
    """One filter-distance column: ``fd/<layer>/<target>/<kind>`` (see :data:`FD_PATTERN`)."""

    layer: str
    target: str  # "r1", "r4", ..., "to_ref", "to_mean"
    kind: str  # "euclid", "cosine", "euclid_raw", ...
    column: str

    @property
    def radius(self) -> int | None:
        return int(self.target[1:]) if self.group == "neighbours" else None

    @property
    def group(self) -> str:
        """``neighbours`` (any radius), ``to_ref`` or ``to_mean``."""
        return self.target if self.target in ("to_ref", "to_mean") else "neighbours"

    @property
    def target_title(self) -> str:
        """Short panel title part: ``radius 1``, ``to original shared filter``, ``to mean filter``."""
        return f"radius {self.radius}" if self.group == "neighbours" else TARGET_TITLES[self.group]

    def sort_key(self) -> tuple:
        return (target_rank(self.target), kind_rank(self.kind))


def target_rank(target: str) -> tuple[int, int]:
    """Rings by radius first, then the original shared filter, then the mean filter."""
    if target.startswith("r"):
        return (0, int(target[1:]))
    return (1 + GROUP_ORDER.index(target), 0)


def kind_rank(kind: str) -> tuple[int, str]:
    return (KIND_ORDER.index(kind), "") if kind in KIND_ORDER else (len(KIND_ORDER), kind)


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


def fd_columns(columns: Sequence[str]) -> dict[str, list[FdSpec]]:
    """``{layer: [FdSpec, ...]}`` of the filter-distance columns present, layers in natural order."""
    layers: dict[str, list[FdSpec]] = {}
    for column in columns:
        match = FD_PATTERN.match(column)
        if match:
            spec = FdSpec(match["layer"], match["target"], match["kind"], column)
            layers.setdefault(spec.layer, []).append(spec)
    return {layer: sorted(layers[layer], key=FdSpec.sort_key) for layer in sorted(layers, key=natural_key)}


def panel_grid(
    fig: Figure, rows: list[str], columns: list[str], used: set[tuple[str, str]]
) -> dict[tuple[str, str], Axes]:
    """A ``rows x columns`` grid of panels keyed by (row, column); cells not in ``used`` removed."""
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    panels: dict[tuple[str, str], Axes] = {}
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            if (row, column) in used:
                panels[(row, column)] = axes[i][j]
            else:
                axes[i][j].remove()
    return panels
