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
:class:`EpochWandbLogger` plots every metric against ``epoch``.

The one epoch numbering (README "Epochs"): epochs count from 0, epoch ``e`` being the
``e``-th trained epoch, as ``metrics.csv``'s ``epoch`` column and Lightning's
``trainer.current_epoch`` at its end. The initial weights are the named point ``init``
(:data:`INIT_EPOCH` = -1 where a number is needed: the W&B ``epoch`` axis, the
``callbacks.filter_images.epochs`` list). :func:`epoch_label` is how file names and captions
write a point: ``init``, ``000``, ``001``, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytorch_lightning.loggers import WandbLogger

from weightshare.results import AUG_TYPES  # the four protocol types, in the order run names list them

__all__ = [
    "ALLOWED_LOGGERS",
    "INIT_EPOCH",
    "EpochWandbLogger",
    "epoch_label",
    "finish_wandb",
    "format_aug",
    "make_run_name",
]

ALLOWED_LOGGERS = ("csv", "tensorboard", "wandb")

#: the initial weights as a number on an epoch axis: the point before epoch 0 (the first trained one)
INIT_EPOCH = -1


def epoch_label(epoch: int) -> str:
    """How a file name or caption writes an epoch: ``init`` for :data:`INIT_EPOCH`, else 3 digits.

    Zero-padded so a directory listing sorts in training order (``000`` .. ``999``, then ``1000``).
    """
    epoch = int(epoch)
    if epoch == INIT_EPOCH:
        return "init"
    if epoch < 0:
        raise ValueError(f"epoch {epoch}: epochs count from 0, {INIT_EPOCH} is the initialisation")
    return f"{epoch:03d}"


class EpochWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger``, with every metric plotted against ``epoch``.

    Why a subclass: Lightning's logger defines ``trainer/global_step`` as the x axis of every
    metric when it creates the run, so W&B's charts count optimiser steps (11, 23, ...) while
    ``metrics.csv`` and the reports count epochs. Here, once the run exists, ``epoch`` is
    defined as the step metric of ``*`` (``define_metric``, the later definition wins); every
    value the project logs carries an ``epoch`` (Lightning adds it to ``self.log`` values, the
    project's own calls pass it, the initial filter distances as :data:`INIT_EPOCH`).

    It also leaves out the ``anonymous`` argument that Lightning always passes to
    ``wandb.init`` (``None`` unless set): wandb >= 0.19 warns "The anonymous setting has no
    effect" for any value given, so every run printed that warning.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        self._epoch_axis = False

    @property
    def experiment(self) -> Any:  # the wandb Run (or Lightning's dummy off rank 0)
        run = WandbLogger.experiment.fget(self)  # type: ignore[attr-defined]
        if not getattr(self, "_epoch_axis", False) and callable(getattr(run, "define_metric", None)):
            run.define_metric("epoch")
            run.define_metric("*", step_metric="epoch", step_sync=True)
            self._epoch_axis = True
        return run


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
