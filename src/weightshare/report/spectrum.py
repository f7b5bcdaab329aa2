"""The sharing-spectrum table and figure: every weight-sharing mechanism of a sweep on one axis.

``experiment=sharing_spectrum`` trains the CNN, tiled sharing, low-rank local connectivity,
both soft-sharing penalties, dynamic sharing and the FCN, each without and with translation.
This module turns the completed jobs of a sweep into

- a **table**: one row per data set, mechanism, setting and training translation level, with
  the parameter count, the clean / translated / quadrant-swapped validation accuracy, the
  radius-1 filter distance of ``conv1`` and the epochs trained (medians over folds, ``n``
  folds per row), all at the **last epoch** (``final/`` in ``results.json``: the filter
  distance asked for is the final one, and the accuracies are read at the same epoch);
- a **figure** per data set: x = parameter count (log scale), y = clean (left panel) and
  translated (right panel) validation accuracy, one marker per mechanism, one line per
  training translation level joining the mechanisms in order of parameter count (equal
  counts, e.g. every FCN-sized mechanism, spread by 2% so their markers separate).

A CNN has no per-position kernels: its filter distance is 0 by construction and shown as 0.
Only jobs of the paper networks (``cnn``, ``fcn``, ``lowrank``) trained with no augmentation or
with translation enter; the spectrum is written when the sweep holds at least one mechanism
beyond the CNN / FCN pair (:func:`has_spectrum`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "MECHANISMS",
    "SPECTRUM_COLUMNS",
    "has_spectrum",
    "mechanism_of",
    "spectrum_figure",
    "spectrum_markdown",
    "spectrum_table",
    "write_spectrum",
]

# from full sharing to none (also the order of the table's rows within a data set)
MECHANISMS = ("CNN", "tiled", "low-rank", "soft L2 neighbours", "soft L1 all pairs", "dynamic", "FCN", "other")
MARKERS = {"CNN": "s", "tiled": "D", "low-rank": "o", "soft L2 neighbours": "^", "soft L1 all pairs": "v"}
MARKERS |= {"dynamic": "P", "FCN": "X", "other": "*"}
METRICS = {
    "clean_acc": "final/val/acc",
    "translated_acc": "final/val/translate/acc",
    "quadrant_swap_acc": "final/val/quadrant_swap/acc",
    "fd_conv1_r1": "final/fd/conv1/r1/euclid",
}
SPECTRUM_COLUMNS = [
    "data",
    "mechanism",
    "setting",
    "train_translate",
    "n",
    "param_count",
    *METRICS,
    "epochs",
]


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value != ""


def mechanism_of(row: dict[str, Any]) -> tuple[str, str]:
    """``(mechanism, setting)`` of one job row (identity fields of ``report.collect``)."""
    model = row.get("model")
    if model == "cnn":
        return "CNN", ""
    if model == "lowrank":
        return "low-rank", f"R={int(row['rank'])} {row.get('combining') or 'full'}"
    if model != "fcn":
        return "other", str(model)
    extra = f", connectivity={row['connectivity']:g}" if (row.get("connectivity") or 0) > 0 else ""
    if _present(row.get("share_tile")):
        return "tiled", f"t={int(row['share_tile'])}{extra}"
    if (row.get("share_penalty") or 0) > 0:
        kind = row.get("share_penalty_kind")
        name = "soft L1 all pairs" if kind == "l1_all_pairs" else "soft L2 neighbours"
        return name, f"weight={row['share_penalty']:g}{extra}"
    if _present(row.get("dynamic_sharing")):
        return "dynamic", f"{row['dynamic_sharing']}{extra}".replace(";", ", ")
    return "FCN", extra.lstrip(", ")


def has_spectrum(jobs: pd.DataFrame) -> bool:
    """Whether the sweep holds a mechanism beyond the CNN and the plain FCN."""
    if jobs.empty:
        return False
    mechanisms = {mechanism_of(r)[0] for r in jobs.to_dict("records")}
    return bool(mechanisms - {"CNN", "FCN", "other"})


def spectrum_table(jobs: pd.DataFrame) -> pd.DataFrame:
    """The table (columns :data:`SPECTRUM_COLUMNS`) from the completed jobs of a sweep."""
    done = jobs[(jobs["status"] == "completed") & jobs["model"].isin(["cnn", "fcn", "lowrank"])]
    done = done[done["aug_type"].isin(["none", "translate"])]
    if done.empty:
        return pd.DataFrame(columns=SPECTRUM_COLUMNS)
    rows = []
    for r in done.to_dict("records"):
        mechanism, setting = mechanism_of(r)
        row = {"data": r["data"], "mechanism": mechanism, "setting": setting, "train_translate": r["aug_level"]}
        row["param_count"] = r.get("param_count")
        row["epochs"] = r.get("epochs_completed")
        for name, column in METRICS.items():
            row[name] = r.get(column, float("nan"))
        if mechanism == "CNN":
            row["fd_conv1_r1"] = 0.0  # one kernel for every position
        rows.append(row)
    frame = pd.DataFrame(rows)
    keys = ["data", "mechanism", "setting", "train_translate"]
    numeric = ["param_count", *METRICS, "epochs"]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    table = frame.groupby(keys, dropna=False)[numeric].median()
    table.insert(0, "n", frame.groupby(keys, dropna=False).size())
    table = table.reset_index()
    table["_order"] = table["mechanism"].map({m: i for i, m in enumerate(MECHANISMS)})
    table = table.sort_values(["data", "_order", "param_count", "setting", "train_translate"])
    return table[SPECTRUM_COLUMNS].reset_index(drop=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def spectrum_markdown(table: pd.DataFrame, figures: list[Path] | None = None, base: Path | None = None) -> str:
    """A Markdown section: the table per data set, then the figures (paths relative to ``base``)."""
    lines = [
        "## The sharing spectrum",
        "",
        "Every mechanism at the last epoch, median over `n` folds; `train translate` is the training "
        "`aug.translate`. Filter distance: radius-1 ring distance of `conv1` (Euclidean, globally "
        "normalised; the CNN's is 0 by construction).",
        "",
    ]
    for data, part in table.groupby("data", sort=False):
        lines += [
            f"### {data}",
            "",
            "| mechanism | setting | train translate | n | parameters | clean acc | translated acc "
            "| quadrant-swap acc | fd conv1 r1 | epochs |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in part.to_dict("records"):
            params = "-" if math.isnan(r["param_count"]) else f"{int(r['param_count']):,}"
            epochs = "-" if math.isnan(r["epochs"]) else f"{r['epochs']:g}"
            lines.append(
                f"| {r['mechanism']} | {r['setting']} | {r['train_translate']:g} | {r['n']} | {params} "
                f"| {_fmt(r['clean_acc'])} | {_fmt(r['translated_acc'])} | {_fmt(r['quadrant_swap_acc'])} "
                f"| {_fmt(r['fd_conv1_r1'])} | {epochs} |"
            )
        lines.append("")
    for path in figures or []:
        rel = path.relative_to(base) if base is not None else path
        lines += [f"![{path.stem}]({rel.as_posix()})", ""]
    return "\n".join(lines)


def _spread_ties(params: pd.Series, step: float = 0.02) -> list[float]:
    """Parameter counts with equal values spread by ``step`` (relative) so their markers separate.

    Several mechanisms share the FCN's parameter count (the penalties, dynamic sharing); on a
    log axis a relative offset looks the same everywhere. The table keeps the exact counts.
    """
    values = list(params.astype(float))
    out: list[float] = []
    for i, v in enumerate(values):
        same = [j for j, w in enumerate(values) if w == v]
        k = same.index(i)
        out.append(v * (1 + step * (k - (len(same) - 1) / 2)))
    return out


def spectrum_figure(table: pd.DataFrame, data: str, path: Path) -> Path:
    """The figure of one data set (see the module docstring), saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = table[(table["data"] == data) & table["param_count"].notna()]
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.2), sharex=True)
    levels = sorted(part["train_translate"].dropna().unique())
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (metric, title) in zip(axes, [("clean_acc", "clean"), ("translated_acc", "translated")]):
        for i, level in enumerate(levels):
            rows = part[part["train_translate"] == level].sort_values(["param_count", "mechanism", "setting"])
            x = _spread_ties(rows["param_count"])
            colour = colours[i % len(colours)]
            ax.plot(x, rows[metric], "-", color=colour, alpha=0.5, label=f"train translate {level:g}")
            for xi, r in zip(x, rows.to_dict("records")):
                ax.plot(xi, r[metric], MARKERS.get(r["mechanism"], "*"), color=colour, markersize=7)
        ax.set_xscale("log")
        ax.set_xlabel("parameters (log scale)")
        ax.set_ylabel(f"{title} validation accuracy (last epoch)")
        ax.set_title(f"{data}: {title} validation accuracy")
        ax.grid(True, which="both", alpha=0.3)
    handles = [
        plt.Line2D([], [], marker=MARKERS[m], linestyle="", color="0.3", label=m)
        for m in MECHANISMS
        if m in set(part["mechanism"])
    ]
    axes[0].legend(loc="best", fontsize=8)
    axes[1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title="mechanism")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_spectrum(sweep: Any, out_dir: Path, *, plots: bool = True) -> tuple[list[Path], str]:
    """``(files, markdown)``: ``spectrum.csv``, ``spectrum.md`` and ``plots/spectrum_<data>.png``.

    Nothing (``([], "")``) when the sweep has no spectrum (:func:`has_spectrum`).
    """
    if not has_spectrum(sweep.jobs):
        return [], ""
    table = spectrum_table(sweep.jobs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "spectrum.csv"
    table.to_csv(csv_path, index=False)
    figures = (
        [spectrum_figure(table, d, out_dir / "plots" / f"spectrum_{d}.png") for d in table["data"].unique()]
        if plots
        else []
    )
    markdown = spectrum_markdown(table, figures, out_dir)
    md_path = out_dir / "spectrum.md"
    md_path.write_text(markdown.replace("## The sharing spectrum", "# The sharing spectrum", 1) + "\n")
    return [csv_path, md_path, *figures], "\n" + markdown + "\n"
