"""Every config-to-object builder, and :func:`build_run`, the one function that wires a run.

Why one module: a run is data module + Lightning module + callbacks + loggers + trainer, and
the single-run entry point, the benchmarks and the packed trainer all need the same objects
from the same config. Building them here, once, means a config key is read in one place.

The order of callbacks matters: everything that logs in ``on_train_epoch_end`` comes before
the epoch CSV writer, so one row holds all of an epoch's values; Lightning runs checkpoint
and early-stopping callbacks after all others, so ``last.ckpt`` of an epoch is written only
once its CSV row exists (a kill in between is undone by the resume, which drops the row).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from torch import nn

from weightshare.callbacks.epoch_csv import EpochCSVWriter
from weightshare.callbacks.throughput import ThroughputMonitor
from weightshare.checkpoints import AtomicCheckpointIO
from weightshare.config.schema import OPTIMIZERS, SCHEDULERS
from weightshare.console import build_progress_bar, quiet_lightning
from weightshare.data.dataset import ArrayDataset, DataInfo
from weightshare.errors import ConfigError
from weightshare.fingerprint import FingerprintStamp, run_fingerprint
from weightshare.loggers import ALLOWED_LOGGERS, get_field
from weightshare.models.registry import is_free_model, model_entry
from weightshare.slurm.env import torch_threads

if TYPE_CHECKING:
    from weightshare.data.datamodule import TensorDataModule
    from weightshare.module import WeightShareModule


# ------------------------------------------------------------------ network and optimiser
def build_model(cfg: DictConfig, data: DataInfo) -> nn.Module:
    """The network registered as ``cfg.name`` (:data:`weightshare.models.MODELS`) for ``data``.

    With ``cfg.init_from`` set (FCN only), the FCN starts as an exact copy of the CNN in that
    checkpoint (the weight-divergence experiment).
    """
    return model_entry(cfg.name).build(cfg, data)


def build_optimizer(params: Any, cfg: DictConfig) -> torch.optim.Optimizer:
    """Adam (Keras-like epsilon by default), AdamW or SGD from the ``optimizer`` node.

    Adam and AdamW use the fused kernels unless ``optimizer.fused=false``: the same update,
    computed in one pass over each tensor. The FCN has up to 4x the CNN's parameters, so the
    per-tensor loop of the default implementation is a large part of its step on a CPU.
    """
    if cfg.name not in OPTIMIZERS:
        raise ConfigError("optimizer.name", cfg.name, f"one of {list(OPTIMIZERS)}")
    fused = True if cfg.fused is None else bool(cfg.fused)
    if cfg.name in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: DictConfig, max_epochs: int) -> Any:
    """Per-epoch schedule (``none`` returns None)."""
    if cfg.name not in SCHEDULERS:
        raise ConfigError("scheduler.name", cfg.name, f"one of {list(SCHEDULERS)}")
    if cfg.name == "none":
        return None
    if cfg.name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    warm = cfg.warmup_epochs
    total = max(max_epochs, warm + 1)

    def factor(epoch: int) -> float:
        if epoch < warm:
            return (epoch + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - warm) / (total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_module(cfg: DictConfig, info: DataInfo, net: nn.Module | None = None) -> WeightShareModule:
    """The Lightning module of ``cfg``: its network (``net``, or built from ``cfg.model``) and factories.

    The module gets an optimizer factory and a scheduler factory (``functools.partial`` of
    :func:`build_optimizer` and :func:`build_scheduler`, lightning-hydra-template's ``_partial_``)
    and the share penalty, so it never reads a config group or calls back into this module.
    """
    from weightshare.layers.share_penalty import model_share_penalty
    from weightshare.module import WeightShareModule

    m = cfg.model
    penalty = functools.partial(
        model_share_penalty, radius=m.penalty_radius, kind=m.get("share_penalty_kind", "l2_neighbours")
    )
    return WeightShareModule(
        net if net is not None else build_model(m, info),
        functools.partial(build_optimizer, cfg=cfg.optimizer),
        functools.partial(build_scheduler, cfg=cfg.scheduler, max_epochs=cfg.trainer.max_epochs),
        num_classes=info.num_classes,
        variants=list(cfg.eval.variants),
        share_penalty=penalty,
        penalty_weight=float(m.share_penalty),
        nan_guard=bool(cfg.callbacks.nan_guard),
        compile=bool(m.compile),
    )


# ------------------------------------------------------------------------------ trainer
def build_trainer_kwargs(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """``cfg.trainer`` as Trainer keyword arguments; a key left null is left to Lightning's default."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(kwargs, dict)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    kwargs["default_root_dir"] = str(out)
    kwargs["enable_checkpointing"] = bool(cfg.callbacks.checkpoint.enabled)
    kwargs["enable_progress_bar"] = cfg.callbacks.progress_bar != "none"
    # checkpoints written atomically in place (Lightning's writer stages them in $TMPDIR and copies)
    kwargs["plugins"] = [AtomicCheckpointIO()]
    return kwargs


# ------------------------------------------------------------------------------ loggers
def _build_wandb(wandb_cfg: Any, run_dir: Path, run_name: str, resolved_config: dict, group: str | None) -> Logger:
    from pytorch_lightning.loggers.wandb import _WANDB_AVAILABLE

    from weightshare.loggers import EpochWandbLogger

    if not _WANDB_AVAILABLE:
        raise ConfigError("logger.names", "wandb", "csv or tensorboard, or install wandb (pip install wandb)")
    offline = bool(get_field(wandb_cfg, "offline", False))
    log_model = get_field(wandb_cfg, "log_model", False)
    if offline and log_model:
        raise ConfigError(
            "logger.wandb.log_model",
            log_model,
            "false when logger.wandb.offline=true (offline runs upload nothing)",
        )
    os.environ.setdefault("WANDB_SILENT", "true")
    tags = [str(t) for t in (get_field(wandb_cfg, "tags", None) or [])]
    # Offline mode goes through wandb.init(mode="offline") rather than WandbLogger(offline=True):
    # the latter sets os.environ["WANDB_MODE"]="dryrun" for the whole process, which would make
    # every later (online) job of a multirun offline too.
    # The run id is derived from the run directory, so a killed job resumed in its directory
    # (ckpt_path=last) continues the same W&B run instead of leaving a crashed half behind.
    run_id = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
    return EpochWandbLogger(
        name=run_name,
        id=run_id,
        resume="allow",
        save_dir=str(run_dir),
        project=get_field(wandb_cfg, "project", "weightshare"),
        log_model=log_model,
        offline=False,
        mode="offline" if offline else "online",
        entity=get_field(wandb_cfg, "entity", None),
        group=get_field(wandb_cfg, "group", None) or group,
        tags=tags,
        job_type=get_field(wandb_cfg, "job_type", "train"),
        config=resolved_config,
    )


def build_loggers(
    logger_cfg: Any,
    run_dir: str | Path,
    run_name: str,
    resolved_config: dict,
    group: str | None = None,
) -> list[Logger]:
    """Lightning loggers for ``logger_cfg.names`` (a subset of ``csv, tensorboard, wandb``).

    - ``csv``: ``CSVLogger(save_dir=run_dir, name="lightning_csv")``
    - ``tensorboard``: ``TensorBoardLogger(save_dir=run_dir, name="tensorboard",
      default_hp_metric=False)``
    - ``wandb``: :class:`~weightshare.loggers.EpochWandbLogger` (metrics against ``epoch``)
      with project, entity, group, tags, job type and log_model from
      ``logger_cfg.wandb``, ``name=run_name``, files under ``run_dir/wandb``, and
      ``resolved_config`` as the run config. ``group`` is used when ``logger.wandb.group`` is
      null (pass the sweep directory name so every job of a sweep lands in one group).
      ``offline: true`` runs W&B in offline mode (no network; sync later with ``wandb sync``).

    Raises:
        ConfigError: an unknown or repeated logger name, or ``log_model`` with ``offline``.
    """
    names = [str(n) for n in (get_field(logger_cfg, "names", None) or [])]
    unknown = [n for n in names if n not in ALLOWED_LOGGERS]
    if unknown:
        raise ConfigError("logger.names", unknown, f"a list of {', '.join(ALLOWED_LOGGERS)}")
    if len(set(names)) != len(names):
        raise ConfigError("logger.names", names, "each of csv, tensorboard, wandb at most once")
    run_dir = Path(run_dir)
    loggers: list[Logger] = []
    for name in names:
        if name == "csv":
            loggers.append(CSVLogger(save_dir=str(run_dir), name="lightning_csv"))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", default_hp_metric=False))
        else:
            wandb_cfg = get_field(logger_cfg, "wandb", {})
            loggers.append(_build_wandb(wandb_cfg, run_dir, run_name, resolved_config, group))
    return loggers


def build_callbacks(cfg: DictConfig, out: Path) -> list[pl.Callback]:
    c = cfg.callbacks
    callbacks: list[pl.Callback] = [ThroughputMonitor()]
    if OmegaConf.select(cfg, "model.dynamic_sharing.every") is not None:  # before the CSV writer: logs land in the row
        from weightshare.callbacks.dynamic_sharing import DynamicSharingCallback

        ds = cfg.model.dynamic_sharing
        callbacks.append(DynamicSharingCallback(ds.every, ds.strength, ds.radius))
    free_model = is_free_model(cfg.model.name)  # models with per-position kernels
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
    progress = build_progress_bar(c.progress_bar)  # a live bar on a terminal, epoch lines elsewhere
    if progress is not None:
        callbacks.append(progress)
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
        callbacks.append(FingerprintStamp(run_fingerprint(cfg)))  # a resume can tell another run's checkpoint
        callbacks += checkpoint_callbacks(
            out / "checkpoints", c.checkpoint.monitor, c.checkpoint.mode, c.checkpoint.save_last
        )
    return callbacks


def checkpoint_callbacks(directory: Path, monitor: str, mode: str, save_last: bool) -> list[ModelCheckpoint]:
    """``best.ckpt`` (the best epoch by ``monitor``) and, with ``save_last``, ``last.ckpt`` of every epoch.

    Why two callbacks: Lightning's own ``save_last=True`` rewrites ``last.ckpt`` only on an
    epoch where the best checkpoint was saved (pytorch-lightning 2.6), so after an epoch
    without improvement ``last.ckpt`` held an older epoch: a preempted run resumed from there
    (redoing epochs) and ``experiment=divergence`` freed the CNN's best, not its last, weights.
    A checkpoint without a monitor and ``save_top_k=1`` is Lightning's way to keep the latest.
    """
    common = {"dirpath": directory, "save_top_k": 1, "save_on_train_epoch_end": True, "enable_version_counter": False}
    best = ModelCheckpoint(filename="best", monitor=monitor, mode=mode, **common)
    return [best, ModelCheckpoint(filename="last", monitor=None, **common)] if save_last else [best]


# ---------------------------------------------------------------------------------- a run
@dataclass
class Run:
    """Everything one training run is made of, built from one config by :func:`build_run`."""

    cfg: DictConfig
    out: Path
    datamodule: TensorDataModule
    module: WeightShareModule
    callbacks: list[pl.Callback]
    loggers: list[Logger]
    trainer: pl.Trainer

    @property
    def info(self) -> DataInfo:
        return self.datamodule.info


def build_parts(
    cfg: DictConfig,
    out: str | Path,
    *,
    dataset: ArrayDataset | None = None,
    resolved_config: dict[str, Any] | None = None,
    group: str | None = None,
    loggers: bool = True,
    progress_bar: bool = True,
) -> tuple[TensorDataModule, WeightShareModule, list[pl.Callback], list[Logger]]:
    """Data module (set up), Lightning module, callbacks and loggers of ``cfg``'s run in ``out``.

    What :func:`build_run` builds but the Trainer: a pack (:mod:`weightshare.packed`) builds
    its members with this, so each member is its single run (``progress_bar=False`` leaves
    out the progress bar: the pack has one). Seeds torch (``cfg.seed``) before the network is
    built, so a run's initial weights are a function of its seed alone.
    """
    from weightshare.data.datamodule import TensorDataModule
    from weightshare.loggers import make_run_name

    out = Path(out)
    if threads := torch_threads(cfg.threads):  # the config's, else the CPUs SLURM gave the task
        torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = TensorDataModule(
        cfg.data, cfg.aug, cfg.eval, seed=cfg.seed, dataset=dataset, precision=str(cfg.trainer.precision)
    )
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.info)
    callbacks = build_callbacks(cfg, out)
    if not progress_bar:
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
    built_loggers: list[Logger] = []
    if loggers:
        logger_cfg = cfg.logger.copy()
        logger_cfg.wandb.tags = list(dict.fromkeys([*cfg.logger.wandb.tags, *cfg.tags]))  # experiment tags too
        config = resolved_config if resolved_config is not None else OmegaConf.to_container(cfg, resolve=True)
        built_loggers = build_loggers(logger_cfg, out, make_run_name(cfg), config, group=group)
    return datamodule, module, callbacks, built_loggers


def build_run(
    cfg: DictConfig,
    out: str | Path,
    *,
    dataset: ArrayDataset | None = None,
    resolved_config: dict[str, Any] | None = None,
    group: str | None = None,
    loggers: bool = True,
    extra_callbacks: list[pl.Callback] | None = None,
    **trainer_overrides: Any,
) -> Run:
    """Data module (set up), Lightning module, callbacks, loggers and Trainer of ``cfg``'s run in ``out``.

    ``dataset`` replaces reading ``data.name`` (benchmarks, notebooks); ``resolved_config`` is
    the run config the loggers record (default: ``cfg`` resolved); ``group`` the W&B group
    when ``logger.wandb.group`` is null (the sweep); ``loggers=False`` builds none;
    ``trainer_overrides`` replace Trainer arguments of ``cfg.trainer`` (benchmarks).
    The parts come from :func:`build_parts` (seeded by ``cfg.seed``).
    """
    out = Path(out)
    datamodule, module, callbacks, built_loggers = build_parts(
        cfg, out, dataset=dataset, resolved_config=resolved_config, group=group, loggers=loggers
    )
    callbacks = [*callbacks, *(extra_callbacks or [])]
    kwargs = {**build_trainer_kwargs(cfg, out), **trainer_overrides}
    quiet_lightning(kwargs.get("devices", 1), kwargs.get("num_nodes", 1))
    trainer = pl.Trainer(**kwargs, callbacks=callbacks, logger=built_loggers or False)
    to_precision(trainer, module)
    return Run(cfg, out, datamodule, module, callbacks, built_loggers, trainer)


def to_precision(trainer: pl.Trainer, module: pl.LightningModule) -> None:
    """Cast ``module`` to ``trainer``'s precision now, as Lightning does in ``strategy.setup``.

    Why: ``trainer.fit(ckpt_path=...)`` restores a checkpoint's weights *before* it casts the
    module, so under ``64-true`` a resumed run's float64 weights were loaded into float32
    parameters and rounded (~1e-8 off after two epochs): a resume was not the uninterrupted run.
    A ``train=false`` run loading weights by hand had the same loss. Mixed precisions keep the
    module as it is; a second cast by Lightning is a no-op.
    """
    trainer.precision_plugin.convert_module(module)
