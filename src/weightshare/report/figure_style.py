"""Drawing parts shared by the sweep figures (:mod:`.figures`) and one run's figures (:mod:`.figures_runs`).

Axis style, file names, the min-max band, panel grids and the parsing of filter-distance
column names (``fd/<layer>/<target>/<kind>``) live here once, so both kinds of figure look
and read the same. Figures are built on :class:`matplotlib.figure.Figure` directly rather
than through ``pyplot``: that renders with the Agg backend whatever backend the caller
selected, keeps no global figure registry (nothing to close, nothing leaks in a long report)
and is safe to call from a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

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


def epoch_axis(ax: Axes) -> None:
    """Whole-number epoch ticks; a run of one or two epochs still spans a readable range."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = ax.get_xlim()
    if hi - lo < 2:
        mid = (lo + hi) / 2
        ax.set_xlim(mid - 1, mid + 1)


def median_band(ax: Axes, rows: pd.DataFrame, by: str, metric: str, linestyle: str, color: Any, label: str) -> None:
    """Median of ``metric`` per value of ``by`` as a line, min-max over folds as a band."""
    stats = rows.groupby(by)[metric].agg(["median", "min", "max"]).dropna()
    if stats.empty:
        return
    ax.plot(stats.index, stats["median"], linestyle=linestyle, marker="o", color=color, linewidth=1.8, label=label)
    ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.15, linewidth=0)


def side_legend(ax: Axes) -> None:
    """Legend right of the axes: curves of a run overlap wherever ``loc="best"`` would put it."""
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))


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
