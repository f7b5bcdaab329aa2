"""Which jobs can be trained as one pack: :func:`unpackable_reason` and :func:`pack_key`.

A pack runs its members' networks as one (``torch.func.vmap`` over the single run's
network) with one data loop, one Trainer and one optimizer with a parameter group per
member, so the members must agree on everything that shapes that shared work (the pack key:
architecture, batch size, epochs, precision, optimizer kind, schedule, evaluation...), and
may differ in everything that lives in a member's own tensors or its own parameter group:
fold and seed, augmentation levels, connection masks, share-penalty weight,
dynamic-sharing strength, FCN init and ``init_from``, learning rate.

Both functions read only the composed config (nothing is loaded), so a launcher can group
a sweep's jobs before any of them starts.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["PACKABLE_PRECISIONS", "pack_key", "unpackable_reason"]

#: precisions a pack runs. Not 16-mixed: its gradient scaler skips a step for the whole pack
#: when one member's gradients overflow, so a member would not train as it does alone.
PACKABLE_PRECISIONS = ("32-true", "32", "64-true", "64", "bf16-mixed")


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    value = OmegaConf.select(cfg, key, default=default)
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def unpackable_reason(cfg: DictConfig) -> str | None:
    """None if a pack can train this job's config, else a one-line reason.

    Every model, optimizer, scheduler, share penalty, dynamic sharing, ``init_from``,
    augmentation and evaluation packs. What does not: the two-stage divergence experiment
    (two trainings in a row), ``model.compile`` (one compiled graph per network, not per
    pack), 16-mixed precision (see :data:`PACKABLE_PRECISIONS`), gradient clipping or
    accumulation, fractional epochs or limits, validation less often than every epoch,
    multi-device runs, test-only jobs and foreign checkpoints: the launcher runs such a job
    as an ordinary single job.
    """
    if int(_get(cfg, "divergence.cnn_epochs", 0) or 0) > 0:
        return "the two-stage divergence experiment (divergence.cnn_epochs > 0) is not packable"
    if _get(cfg, "model.compile"):
        return "model.compile=true is not packable (torch.compile compiles one network, not a pack)"
    precision = str(_get(cfg, "trainer.precision"))
    if precision not in PACKABLE_PRECISIONS:
        return f"trainer.precision={precision} is not packable (one of {', '.join(PACKABLE_PRECISIONS)})"
    checks = {
        "trainer.devices": (1, "1"),
        "trainer.num_nodes": (1,),
        "trainer.accumulate_grad_batches": (1,),
        "trainer.gradient_clip_val": (None,),
        "trainer.limit_train_batches": (None, 1.0, 1),
        "trainer.limit_val_batches": (None, 1.0, 1),
        "trainer.max_time": (None,),
        "trainer.fast_dev_run": (False, 0),
        "trainer.check_val_every_n_epoch": (1,),
        "trainer.profiler": (None,),
    }
    for key, allowed in checks.items():
        value = _get(cfg, key)
        if value not in allowed:
            return f"{key}={value} is not packable (allowed: {', '.join(map(str, allowed))})"
    if str(_get(cfg, "trainer.strategy", "auto")) != "auto":
        return f"trainer.strategy={_get(cfg, 'trainer.strategy')} is not packable"
    if not _get(cfg, "train", True):
        return "train=false (test-only) is not packable"
    if _get(cfg, "ckpt_path") not in (None, "last"):
        return f"ckpt_path={_get(cfg, 'ckpt_path')} (a foreign checkpoint) is not packable"
    return None


#: config keys that every member of a pack shares (see :func:`pack_key`)
SHARED_KEYS: tuple[str, ...] = (
    # data set and split kind, loader
    "data.name",
    "data.root",
    "data.split",
    "data.n_folds",
    "data.batch_size",
    "data.eval_batch_size",
    "data.limit_train",
    "data.limit_val",
    "data.shuffle",
    "data.options",
    # epochs, patience, early stopping, checkpoints, per-epoch metrics
    "trainer.max_epochs",
    "trainer.min_epochs",
    "trainer.precision",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.deterministic",
    "callbacks.early_stopping",
    "callbacks.checkpoint",
    "callbacks.filter_metrics",
    "callbacks.filter_images",
    "callbacks.nan_guard",
    # optimizer kind and its other settings (not lr), scheduler
    "optimizer.name",
    "optimizer.betas",
    "optimizer.eps",
    "optimizer.weight_decay",
    "optimizer.momentum",
    "optimizer.nesterov",
    "optimizer.fused",
    "scheduler",
    # augmentation settings other than the four levels
    "aug.edge_width",
    "aug.faithful_edge_noise",
    "aug.crop_padding",
    "aug.hflip",
    # evaluation
    "eval",
    "test",
    "float32_matmul_precision",
    "threads",
)


#: ``model`` keys in which members may differ (everything else in ``model`` is shared: the architecture)
MEMBER_MODEL_KEYS = (
    "connectivity",
    "connectivity_mode",
    "mask_seed",
    "share_penalty",
    "fcn_init",
    "basis_init",
    "init_from",
)


def pack_key(cfg: DictConfig) -> tuple:
    """Jobs with equal keys may share one pack.

    The key is the tuple of ``(key, value)`` for every entry of :data:`SHARED_KEYS` and the
    whole ``model`` node but :data:`MEMBER_MODEL_KEYS` and the dynamic-sharing strength
    (values resolved, lists and mappings as sorted tuples so the key is hashable). Members
    share: data set and split kind, the architecture (every other ``model`` key), batch
    size, epochs and patience (all early-stopping, checkpoint and filter metric settings),
    precision, device/accelerator, optimizer kind and its other settings (not lr),
    scheduler, evaluation variants and eval settings. Members may differ in: fold, seed,
    augmentation type and level, VCP connectivity/mode/mask seed, share-penalty weight,
    dynamic-sharing strength, FCN init, low-rank basis init, ``init_from``, learning rate (and task name, tags,
    loggers, output directory).
    """
    model = _get(cfg, "model") or {}
    model = {k: v for k, v in model.items() if k not in MEMBER_MODEL_KEYS}
    if isinstance(model.get("dynamic_sharing"), dict):
        model["dynamic_sharing"] = {k: v for k, v in model["dynamic_sharing"].items() if k != "strength"}
    return (*((key, _freeze(_get(cfg, key))) for key in SHARED_KEYS), ("model", _freeze(model)))


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value
