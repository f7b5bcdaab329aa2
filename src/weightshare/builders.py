"""Config -> Lightning objects: the Trainer's arguments and the callback list.

The order of callbacks matters: everything that logs in ``on_train_epoch_end`` comes before
the epoch CSV writer, so one row holds all of an epoch's values; Lightning runs checkpoint
and early-stopping callbacks after all others, so ``last.ckpt`` of an epoch is written only
once its CSV row exists (a kill in between is undone by the resume, which drops the row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, TQDMProgressBar

from weightshare.callbacks.epoch_csv import EpochCSVWriter
from weightshare.callbacks.throughput import ThroughputMonitor

_OPTIONAL_TRAINER_KEYS = (
    "max_time",
    "benchmark",
    "gradient_clip_val",
    "limit_train_batches",
    "limit_val_batches",
    "profiler",
)


def build_trainer_kwargs(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """``cfg.trainer`` as Trainer keyword arguments (unset optional keys left to Lightning)."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(kwargs, dict)
    for key in _OPTIONAL_TRAINER_KEYS:
        if kwargs.get(key) is None:
            kwargs.pop(key, None)
    kwargs["default_root_dir"] = str(out)
    kwargs["enable_checkpointing"] = bool(cfg.callbacks.checkpoint.enabled)
    kwargs["enable_progress_bar"] = cfg.callbacks.progress_bar != "none"
    return kwargs


def build_callbacks(cfg: DictConfig, out: Path) -> list[pl.Callback]:
    c = cfg.callbacks
    callbacks: list[pl.Callback] = [ThroughputMonitor()]
    if OmegaConf.select(cfg, "model.dynamic_sharing.every") is not None:  # before the CSV writer: logs land in the row
        from weightshare.callbacks.dynamic_sharing import DynamicSharingCallback

        ds = cfg.model.dynamic_sharing
        callbacks.append(DynamicSharingCallback(ds.every, ds.strength, ds.radius))
    free_model = cfg.model.name in ("fcn", "lowrank")  # models with per-position kernels
    if c.filter_metrics.enabled and free_model:
        from weightshare.callbacks.filter_metrics import FilterDistanceCallback

        callbacks.append(
            FilterDistanceCallback(
                radii=list(c.filter_metrics.radii),
                layers=list(c.filter_metrics.layers) if c.filter_metrics.layers else None,
                every_n_epochs=c.filter_metrics.every_n_epochs,
            )
        )
    if c.filter_images.enabled and free_model:
        from weightshare.callbacks.filter_images import FilterImageCallback

        callbacks.append(
            FilterImageCallback(
                epochs=list(c.filter_images.epochs),
                last=c.filter_images.last,
                filter_index=c.filter_images.filter_index,
                layers=list(c.filter_images.layers) if c.filter_images.layers else None,
                out_dir=out,
            )
        )
    if cfg.trial.storage:
        from weightshare.callbacks.optuna_pruning import OptunaPruningCallback

        callbacks.append(OptunaPruningCallback(cfg.trial))
    if c.progress_bar == "rich":
        callbacks.append(RichProgressBar(leave=True))
    elif c.progress_bar == "tqdm":
        callbacks.append(TQDMProgressBar())
    callbacks.append(EpochCSVWriter(out / "metrics.csv"))
    if c.early_stopping.enabled:
        callbacks.append(
            EarlyStopping(
                monitor=c.early_stopping.monitor,
                mode=c.early_stopping.mode,
                patience=c.early_stopping.patience,
                min_delta=c.early_stopping.min_delta,
            )
        )
    if c.checkpoint.enabled:
        callbacks.append(
            ModelCheckpoint(
                dirpath=out / "checkpoints",
                filename="best",
                monitor=c.checkpoint.monitor,
                mode=c.checkpoint.mode,
                save_last=c.checkpoint.save_last,
                save_top_k=1,
                save_on_train_epoch_end=True,
                enable_version_counter=False,
            )
        )
    return callbacks
