"""Optuna's own matplotlib figures of a search, made readable at the size they are written.

The search section of the report (:mod:`.search`) shows what an Optuna user knows:
:mod:`optuna.visualization.matplotlib`'s optimisation history, slice, parameter importances and
contour of the learning rate against the depth. They are not redrawn by hand: Optuna decides
how pruned and failed trials show. Two things are adjusted after Optuna draws: the suptitle
(study name and any reduced budget, :mod:`.budget`) and log axes of a narrow range, whose
minor-tick labels Matplotlib prints on top of each other (a TPE search's close learning
rates).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any


def param_named(names: Sequence[str], suffix: str) -> str | None:
    """The swept parameter named ``suffix`` or ending in ``.<suffix>`` (``optimizer.lr``)."""
    return next((n for n in names if n == suffix or n.endswith("." + suffix)), None)


def search_figures(
    study: Any, slug: str, target_name: str, subtitle: str = ""
) -> Iterator[tuple[str, Any, str | None]]:
    """``(file name, figure or None, note)`` of Optuna's four figures for one study.

    Optuna draws on pyplot figures; each is yielded for saving and closed by the caller. A
    figure Optuna refuses (too few finished trials, no lr or depth swept) comes back as
    ``None`` with the reason.
    """
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    names = sorted({n for t in study.get_trials(deepcopy=False) for n in t.distributions})
    lr, depth = param_named(names, "lr"), param_named(names, "depth")
    contour_params = [lr, depth] if lr and depth else None
    named = {"target_name": target_name}
    contour = (lambda: ovm.plot_contour(study, params=contour_params, **named)) if contour_params else None
    plots = (
        ("optimization_history", "optimisation history", lambda: ovm.plot_optimization_history(study, **named)),
        ("slice", "slice", lambda: ovm.plot_slice(study, **named)),
        ("param_importances", "parameter importances", lambda: ovm.plot_param_importances(study, **named)),
        ("contour_lr_depth", "contour of lr against depth", contour),
    )
    for stem, label, draw in plots:
        name = f"search_{slug}_{stem}.png"
        if draw is None:
            yield name, None, f"{label}: not drawn (the search sweeps no learning rate and depth)"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                axes = draw()
        except Exception as exc:  # Optuna's own refusal (e.g. importances need 2+ finished trials)
            plt.close("all")
            yield name, None, f"{label}: not drawn ({type(exc).__name__}: {exc})"
            continue
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        fig = first.figure
        if not any(ax.has_data() for ax in fig.axes):
            plt.close(fig)
            yield name, None, f"{label}: not drawn (no finished trial to draw)"
            continue
        fig.suptitle(f"{study.study_name}" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
        for ax in fig.axes:
            _readable_log_axes(ax)
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        if len(panels) > 1:  # the slice plot: one panel per parameter, Optuna's default is too narrow
            fig.set_size_inches(4.2 * len(panels) + 1.5, 4.8)
        yield name, fig, None


def _readable_log_axes(ax: Any) -> None:
    """Log axes of a narrow range (a few close learning rates): three plain ticks, no minor labels.

    Matplotlib labels the minor ticks of a log axis spanning less than a decade, and Optuna's
    slice plot then prints ``1.51x10^-3`` ... on top of each other, or no label at all.
    """
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log":
            continue
        axis.set_minor_formatter(NullFormatter())
        lo, hi = sorted(limits)
        if lo > 0 and math.log10(hi / lo) < 1:
            axis.set_major_locator(MaxNLocator(nbins=3))
            axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:.3g}"))
