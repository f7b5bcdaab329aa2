"""The fingerprint of a run: the config values that define what is trained, to refuse mixing two runs.

Why: resuming a run directory (``ckpt_path=last``, ``resume=true``) with a changed config
would continue run A's weights under run B's labels: ``results.json`` would say one learning
rate while every row of ``metrics.csv`` was trained with another. Every checkpoint and every
``results.json`` therefore carries :func:`run_fingerprint` of the config that wrote it, and
a resume compares it with the current one (:func:`check_same_run`).

The fingerprint is the whole resolved config except two kinds of keys:

- :data:`OUTPUT_KEYS`: where outputs go, how progress is shown, which extra figures and
  metrics are recorded, where the job runs (device, threads) and sweep bookkeeping; they do
  not change what is trained;
- :data:`LIMIT_KEYS`: limits a user may raise to let a run go on (more epochs, more
  patience, early stopping off). With ``scheduler=cosine`` the epoch limit shapes every
  epoch's learning rate, so there ``trainer.max_epochs`` stays in the fingerprint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning import Callback

#: keys (and everything below them) that say where outputs go or how a run is watched
OUTPUT_KEYS = (
    "hydra",
    "defaults",
    "paths",
    "data.root",
    "data.download",
    "data.verify_checksums",
    "task_name",
    "tags",
    "logger",
    "ckpt_path",
    "resume",
    "skip_completed",
    "train",
    "test",
    "optimized_metric",
    "trial",
    "threads",
    "budget",
    "callbacks.progress_bar",
    "callbacks.filter_images",
    "callbacks.filter_metrics",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
    "trainer.num_nodes",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.profiler",
    "trainer.num_sanity_val_steps",
    "trainer.detect_anomaly",
)
#: limits a user may legitimately raise when resuming (``trainer.max_epochs`` not with cosine)
LIMIT_KEYS = (
    "trainer.max_epochs",
    "trainer.min_epochs",
    "trainer.max_time",
    "data.max_epochs",
    "data.patience",
    "data.search_max_epochs",
    "data.search_patience",
    "callbacks.early_stopping.enabled",
    "callbacks.early_stopping.patience",
)
#: the key under which a checkpoint carries its fingerprint
CHECKPOINT_KEY = "weightshare_fingerprint"


def _excluded(path: str, cosine: bool) -> bool:
    if cosine and path in ("trainer.max_epochs", "data.max_epochs"):
        return False
    return any(path == k or path.startswith(k + ".") for k in (*OUTPUT_KEYS, *LIMIT_KEYS))


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def run_fingerprint(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": value}`` for every config leaf that defines the run (see the module docstring).

    Only the defining keys are resolved, so an output path that resolves only inside Hydra
    (``${hydra:runtime.output_dir}``) is never touched. Lists are single values.
    """
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    cosine = OmegaConf.select(node, "scheduler.name", default=None) == "cosine"
    out: dict[str, Any] = {}

    def walk(sub: DictConfig, prefix: str) -> None:
        for key in sub:
            path = f"{prefix}{key}"
            if _excluded(path, cosine):
                continue
            child = sub._get_node(key)
            if isinstance(child, DictConfig) and not child._is_interpolation():
                walk(child, path + ".")
            else:
                out[path] = _plain(OmegaConf.select(node, path, throw_on_missing=False))

    walk(node, "")
    return dict(sorted(out.items()))


def fingerprint_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ (or that only one side has), sorted."""
    keys = set(stored) | set(current)
    return sorted(k for k in keys if stored.get(k, "<absent>") != current.get(k, "<absent>"))


def describe_diff(stored: Mapping[str, Any], current: Mapping[str, Any], keys: list[str], most: int = 6) -> str:
    """``lr: 0.001 -> 0.0001, aug.translate: 0.0 -> 0.2`` for the first ``most`` keys."""
    parts = [f"{k}: {stored.get(k, '<absent>')!r} -> {current.get(k, '<absent>')!r}" for k in keys[:most]]
    if len(keys) > most:
        parts.append(f"and {len(keys) - most} more")
    return ", ".join(parts)


def check_same_run(stored: Mapping[str, Any] | None, current: Mapping[str, Any], source: str) -> None:
    """Raise :class:`~weightshare.errors.RunMismatchError` if ``stored`` (from ``source``) is another run's.

    ``stored`` None (a file from before fingerprints existed) is accepted.
    """
    from weightshare.errors import RunMismatchError

    if stored is None:
        return
    keys = fingerprint_diff(stored, current)
    if keys:
        raise RunMismatchError(
            f"resume refused: {source} belongs to a run with another config ({len(keys)} "
            f"key{'s' if len(keys) > 1 else ''} differ: {describe_diff(stored, current, keys)}); "
            "resume with the original values, or start over in a new hydra.run.dir / without resume"
        )


class FingerprintStamp(Callback):
    """Put the run's fingerprint into every checkpoint it writes (``checkpoint[CHECKPOINT_KEY]``)."""

    def __init__(self, fingerprint: Mapping[str, Any]) -> None:
        self.fingerprint = dict(fingerprint)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = dict(self.fingerprint)
