"""Lightning loggers built from the ``logger`` config group, and the W&B run name.

``logger.names`` picks any of ``csv`` (Lightning's CSVLogger, beside the project's own
``metrics.csv``), ``tensorboard`` and ``wandb``, several at once. Every logger writes inside
the run directory, so a run directory stays self-contained.

The loggers themselves are built by :func:`weightshare.builders.build_loggers`.

W&B specifics: the run is named by :func:`make_run_name` (model/data/aug/fold, plus depth
and lr when not the defaults), grouped by
``logger.wandb.group`` (the integrator passes the sweep directory name for multiruns), and
gets the resolved config as its run config. ``offline: true`` needs no network. Each job of a
multirun must be its own W&B run: call :func:`finish_wandb` at the end of every job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weightshare.results import AUG_TYPES  # the four protocol types, in the order run names list them

__all__ = ["ALLOWED_LOGGERS", "finish_wandb", "format_aug", "make_run_name"]

ALLOWED_LOGGERS = ("csv", "tensorboard", "wandb")

# The paper's default network depth (Table A.2: three convolutional layers); other depths are named.
_DEFAULT_DEPTH = 3


def get_field(node: Any, key: str, default: Any = None) -> Any:
    """Attribute access that works on dataclasses, DictConfigs and plain dicts."""
    if isinstance(node, Mapping):
        return node.get(key, default)
    return getattr(node, key, default)


def _fmt(value: float) -> str:
    """Shortest readable number: 0.1 -> '0.1', 0.99 -> '0.99', 2.0 -> '2'."""
    return f"{float(value):g}"


def format_aug(aug_cfg: Any) -> str:
    """The augmentation part of a run name.

    ``noaug`` when every level is 0, else the non-zero types with their levels joined by
    ``+`` (``translate0.1``, ``translate0.1+noise0.2``); the ShaResNet recipe's crop padding
    and horizontal flip are appended as ``crop4`` and ``hflip`` when set.
    """
    parts = [f"{name}{_fmt(get_field(aug_cfg, name, 0.0))}" for name in AUG_TYPES if get_field(aug_cfg, name, 0.0)]
    if get_field(aug_cfg, "crop_padding", 0):
        parts.append(f"crop{int(get_field(aug_cfg, 'crop_padding'))}")
    if get_field(aug_cfg, "hflip", False):
        parts.append("hflip")
    return "+".join(parts) if parts else "noaug"


def make_run_name(cfg: Any) -> str:
    """A readable run name encoding model, data, augmentation, fold, and depth/lr when not default.

    ``<model>-<data>-<aug>-<fold>``, e.g. ``fcn-mnist-translate0.1-fold0`` or
    ``cnn-cifar10-noaug-standard`` (``fold<k>`` for the k-fold split, else the split name).
    Non-default model variants are appended to the model part with ``_`` so runs of a VCP or
    soft-sharing sweep stay distinguishable: ``fcn_conn0.5``, ``fcn_tile2``, ``fcn_pen0.01``,
    ``fcn_fromckpt`` (``init_from`` set).

    The paper's hyperparameter grid varies depth and learning rate too, so those follow at the
    end when they differ from the defaults: ``-d<depth>`` when ``model.depth != 3`` and
    ``-lr<lr>`` when ``optimizer.lr`` is set and differs from the dataset's default
    ``data.lr`` (``fcn-mnist-noaug-fold0-d2-lr0.0001``). ``optimizer.lr = null`` means the
    dataset default, so it adds nothing.
    """
    model = get_field(cfg, "model", {})
    data = get_field(cfg, "data", {})
    model_part = str(get_field(model, "name", "model"))
    if get_field(model, "connectivity", 0.0):
        model_part += f"_conn{_fmt(get_field(model, 'connectivity'))}"
    if get_field(model, "share_tile", None):
        model_part += f"_tile{int(get_field(model, 'share_tile'))}"
    if get_field(model, "share_penalty", 0.0):
        model_part += f"_pen{_fmt(get_field(model, 'share_penalty'))}"
    if get_field(model, "init_from", None):
        model_part += "_fromckpt"
    split = str(get_field(data, "split", "kfold"))
    split_part = f"fold{int(get_field(data, 'fold', 0))}" if split == "kfold" else split
    parts = [model_part, str(get_field(data, "name", "data")), format_aug(get_field(cfg, "aug", {})), split_part]
    depth = get_field(model, "depth", _DEFAULT_DEPTH)
    if depth is not None and int(depth) != _DEFAULT_DEPTH:
        parts.append(f"d{int(depth)}")
    lr = get_field(get_field(cfg, "optimizer", {}), "lr", None)
    default_lr = get_field(data, "lr", None)
    if lr is not None and (default_lr is None or float(lr) != float(default_lr)):
        parts.append(f"lr{_fmt(lr)}")
    return "-".join(parts)


def finish_wandb(exit_code: int | None = None, teardown: bool = False) -> bool:
    """Finish the active W&B run, if any, so the next multirun job starts its own run.

    ``exit_code`` non-zero marks the run failed in W&B. Returns whether a run was finished.
    Safe to call when wandb is not installed or no run is active.

    ``wandb.finish`` returns before the background W&B service has written everything to the
    offline ``run-*.wandb`` file; the service keeps writing and is flushed at interpreter exit.
    ``teardown=True`` also stops the service now (everything on disk when this returns), at
    the cost of restarting it for the next run: use it at the end of a process that may not
    run its exit handlers, or before reading the offline files.
    """
    try:
        import wandb
    except ImportError:
        return False
    finished = wandb.run is not None
    if finished:
        wandb.finish(exit_code=exit_code)
    if teardown:
        wandb.teardown()
    return finished
