"""Which jobs can be trained as one pack: :func:`unpackable_reason` and :func:`pack_key`.

A pack trains its members as one stacked network with one data pipeline, one step and one
per-member Adam, so the members must agree on everything that shapes that shared work
(the pack key), and may differ only in what lives in per-member tensors: fold and seed
(index batches and initial weights), augmentation levels (per-sample level tensors),
connection masks (per-member mask tensors), share-penalty weight, dynamic-sharing strength,
FCN init scale and learning rate (per-member Adam).

Both functions read only the composed config (nothing is loaded), so a launcher can group
a sweep's jobs before any of them starts.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["PACKABLE_PRECISIONS", "pack_key", "unpackable_reason"]

#: precisions the packed trainer runs (16-mixed needs a gradient scaler, not implemented)
PACKABLE_PRECISIONS = ("32-true", "32", "64-true", "64", "bf16-mixed")
#: models the stacked network builds (:class:`~weightshare.packed.stacked_net.StackedPaperNet`)
PACKABLE_MODELS = ("cnn", "fcn", "lowrank")
#: optimizers with an elementwise update that a stacked per-member step reproduces
PACKABLE_OPTIMIZERS = ("adam",)
#: share-penalty kinds the stacked network computes per member (``StackedPaperNet.share_penalty``)
PACKABLE_PENALTY_KINDS = ("l2_neighbours", "l1_all_pairs")


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    value = OmegaConf.select(cfg, key, default=default)
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def unpackable_reason(cfg: DictConfig) -> str | None:
    """None if the packed trainer supports this job's config, else a one-line reason.

    Supported: the paper networks (``model=cnn``/``fcn``/``lowrank``, with VCP masks in both
    modes, ``share_tile``, the ``share_penalty`` of either kind, ``l2_neighbours`` or
    ``l1_all_pairs``, and ``model.dynamic_sharing``; low-rank layers with full or factorized
    combining) trained with Adam on one device, in fp32, fp64 or
    bf16 autocast, with any scheduler, augmentation and evaluation variants. Everything
    else (residual networks, the two-stage divergence experiment, CNN-initialised FCNs,
    SGD, gradient clipping or accumulation, fractional epochs, multi-device runs) is a
    reason: the launcher runs such a job as an ordinary single job.
    """
    name = _get(cfg, "model.name")
    if name not in PACKABLE_MODELS:
        return f"model={name} is not packable (only the paper networks {'/'.join(PACKABLE_MODELS)} are)"
    kind = _get(cfg, "model.share_penalty_kind", "l2_neighbours")
    if kind not in PACKABLE_PENALTY_KINDS:
        return f"model.share_penalty_kind={kind} is not packable (one of {', '.join(PACKABLE_PENALTY_KINDS)})"
    if int(_get(cfg, "divergence.cnn_epochs", 0) or 0) > 0:
        return "the two-stage divergence experiment (divergence.cnn_epochs > 0) is not packable"
    if _get(cfg, "model.init_from"):
        return "model.init_from (an FCN started from a CNN checkpoint) is not packable"
    if _get(cfg, "model.compile"):
        return "model.compile=true is not packable"
    opt = _get(cfg, "optimizer.name")
    if opt not in PACKABLE_OPTIMIZERS:
        return f"optimizer={opt} is not packable (only {', '.join(PACKABLE_OPTIMIZERS)})"
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
    # architecture
    "model.name",
    "model.depth",
    "model.hidden",
    "model.impl",
    "model.share_tile",
    "model.penalty_radius",
    "model.share_penalty_kind",
    "model.dynamic_sharing.every",
    "model.dynamic_sharing.radius",
    "model.arch",
    "model.rank",
    "model.combining",
    "model.filter_bias",
    "model.spatial_bias",
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


def pack_key(cfg: DictConfig) -> tuple:
    """Jobs with equal keys may share one pack.

    The key is the tuple of ``(key, value)`` for every entry of :data:`SHARED_KEYS`
    (values resolved, lists and mappings as sorted tuples so the key is hashable). Members
    share: data set and split kind, architecture (model name, depth, hidden, tile size,
    arch, impl, low-rank rank, combining and biases, share-penalty kind and radius, dynamic-sharing
    period and radius), batch
    size, epochs and patience (all early-stopping, checkpoint and filter metric settings),
    precision, device/accelerator, optimizer kind and its other settings (not lr),
    scheduler, evaluation variants and eval settings. Members may differ in: fold, seed,
    augmentation type and level, VCP connectivity/mode/mask seed, share-penalty weight,
    dynamic-sharing strength, FCN init and low-rank basis init, learning rate (and task name, tags, loggers,
    output directory).
    """
    return tuple((key, _freeze(_get(cfg, key))) for key in SHARED_KEYS)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value
