"""Lightning loggers built from the ``logger`` config group, and the W&B run name.

``logger.names`` picks any of ``csv`` (Lightning's CSVLogger, beside the project's own
``metrics.csv``), ``tensorboard`` and ``wandb``, several at once. Every logger writes inside
the run directory, so a run directory stays self-contained.

W&B specifics: the run is named by :func:`make_run_name` (model/data/aug/fold, plus depth
and lr when not the defaults), grouped by
``logger.wandb.group`` (the integrator passes the sweep directory name for multiruns), and
gets the resolved config as its run config. ``offline: true`` needs no network. Each job of a
multirun must be its own W&B run: call :func:`finish_wandb` at the end of every job.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger

from weightshare.errors import ConfigError

__all__ = ["ALLOWED_LOGGERS", "build_loggers", "finish_wandb", "format_aug", "make_run_name"]

ALLOWED_LOGGERS = ("csv", "tensorboard", "wandb")

# The four protocol augmentation types, in the order they appear in run names.
from weightshare.results import AUG_TYPES as _AUG_TYPES  # noqa: E402 (one list: results.AUG_TYPES)

# The paper's default network depth (Table A.2: three convolutional layers); other depths are named.
_DEFAULT_DEPTH = 3


def _get(node: Any, key: str, default: Any = None) -> Any:
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
    parts = [f"{name}{_fmt(_get(aug_cfg, name, 0.0))}" for name in _AUG_TYPES if _get(aug_cfg, name, 0.0)]
    if _get(aug_cfg, "crop_padding", 0):
        parts.append(f"crop{int(_get(aug_cfg, 'crop_padding'))}")
    if _get(aug_cfg, "hflip", False):
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
    model = _get(cfg, "model", {})
    data = _get(cfg, "data", {})
    model_part = str(_get(model, "name", "model"))
    if _get(model, "connectivity", 0.0):
        model_part += f"_conn{_fmt(_get(model, 'connectivity'))}"
    if _get(model, "share_tile", None):
        model_part += f"_tile{int(_get(model, 'share_tile'))}"
    if _get(model, "share_penalty", 0.0):
        model_part += f"_pen{_fmt(_get(model, 'share_penalty'))}"
    if _get(model, "init_from", None):
        model_part += "_fromckpt"
    split = str(_get(data, "split", "kfold"))
    split_part = f"fold{int(_get(data, 'fold', 0))}" if split == "kfold" else split
    parts = [model_part, str(_get(data, "name", "data")), format_aug(_get(cfg, "aug", {})), split_part]
    depth = _get(model, "depth", _DEFAULT_DEPTH)
    if depth is not None and int(depth) != _DEFAULT_DEPTH:
        parts.append(f"d{int(depth)}")
    lr = _get(_get(cfg, "optimizer", {}), "lr", None)
    default_lr = _get(data, "lr", None)
    if lr is not None and (default_lr is None or float(lr) != float(default_lr)):
        parts.append(f"lr{_fmt(lr)}")
    return "-".join(parts)


def _build_wandb(wandb_cfg: Any, run_dir: Path, run_name: str, resolved_config: dict, group: str | None) -> Logger:
    try:
        from pytorch_lightning.loggers import WandbLogger
        from pytorch_lightning.loggers.wandb import _WANDB_AVAILABLE
    except ImportError as exc:  # pragma: no cover - Lightning always ships the class
        raise ConfigError("logger.names", "wandb", "csv or tensorboard (W&B logger unavailable)") from exc
    if not _WANDB_AVAILABLE:
        raise ConfigError("logger.names", "wandb", "csv or tensorboard, or install wandb (pip install wandb)")
    offline = bool(_get(wandb_cfg, "offline", False))
    log_model = _get(wandb_cfg, "log_model", False)
    if offline and log_model:
        raise ConfigError(
            "logger.wandb.log_model",
            log_model,
            "false when logger.wandb.offline=true (offline runs upload nothing)",
        )
    os.environ.setdefault("WANDB_SILENT", "true")
    tags = [str(t) for t in (_get(wandb_cfg, "tags", None) or [])]
    # Offline mode goes through wandb.init(mode="offline") rather than WandbLogger(offline=True):
    # the latter sets os.environ["WANDB_MODE"]="dryrun" for the whole process, which would make
    # every later (online) job of a multirun offline too.
    # The run id is derived from the run directory, so a killed job resumed in its directory
    # (ckpt_path=last) continues the same W&B run instead of leaving a crashed half behind.
    run_id = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
    return WandbLogger(
        name=run_name,
        id=run_id,
        resume="allow",
        save_dir=str(run_dir),
        project=_get(wandb_cfg, "project", "weightshare"),
        log_model=log_model,
        offline=False,
        mode="offline" if offline else "online",
        entity=_get(wandb_cfg, "entity", None),
        group=_get(wandb_cfg, "group", None) or group,
        tags=tags,
        job_type=_get(wandb_cfg, "job_type", "train"),
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
    - ``wandb``: ``WandbLogger`` with project, entity, group, tags, job type and log_model from
      ``logger_cfg.wandb``, ``name=run_name``, files under ``run_dir/wandb``, and
      ``resolved_config`` as the run config. ``group`` is used when ``logger.wandb.group`` is
      null (pass the sweep directory name so every job of a sweep lands in one group).
      ``offline: true`` runs W&B in offline mode (no network; sync later with ``wandb sync``).

    Raises:
        ConfigError: an unknown or repeated logger name, or ``log_model`` with ``offline``.
    """
    names = [str(n) for n in (_get(logger_cfg, "names", None) or [])]
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
            wandb_cfg = _get(logger_cfg, "wandb", {})
            loggers.append(_build_wandb(wandb_cfg, run_dir, run_name, resolved_config, group))
    return loggers


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
