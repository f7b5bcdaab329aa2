"""Lightning callback running the dynamic weight-sharing phase every N training steps.

After every ``every``-th optimiser step (``trainer.global_step`` a multiple of ``every``) the
network's free layers are pulled towards their group means
(:func:`weightshare.layers.dynamic_sharing.dynamic_share_`). The schedule depends only on the
global step, so a resumed run shares at exactly the steps an uninterrupted one would, with
no state of its own to checkpoint.

Logged per epoch: ``train/dynamic_sharing_steps`` (sharing steps so far, ``global_step //
every``) and ``train/dynamic_sharing_shift`` (mean over this epoch's sharing steps of
``||W_after - W_before|| / ||W_before||``, all free kernels together), so a run shows how far
each phase moved the weights (it shrinks as the layer stays close to shared).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from weightshare.callbacks.filter_metrics import network_of
from weightshare.errors import ConfigError
from weightshare.layers.common import check_radius, filter_kernel
from weightshare.layers.dynamic_sharing import dynamic_share_
from weightshare.metrics.filter_distance import free_layers

__all__ = ["DynamicSharingCallback"]


class DynamicSharingCallback(pl.Callback):
    """Re-share the free layers every ``every`` steps with ``strength`` and ``radius``."""

    def __init__(self, every: int, strength: float = 1.0, radius: int | None = None) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError("model.dynamic_sharing.every", every, "an integer >= 1")
        ok = not isinstance(strength, bool) and isinstance(strength, (int, float)) and 0 < strength <= 1
        if not ok:
            raise ConfigError("model.dynamic_sharing.strength", strength, "a number in (0, 1]")
        self.every, self.strength = every, float(strength)
        self.radius = None if radius is None else check_radius(radius, "model.dynamic_sharing.radius")
        self._shifts: list[float] = []

    def _kernels(self, pl_module: pl.LightningModule) -> torch.Tensor:
        return torch.cat([filter_kernel(m).detach().flatten() for _, m in free_layers(network_of(pl_module))])

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._shifts = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every != 0:
            return
        before = self._kernels(pl_module)
        dynamic_share_(network_of(pl_module), self.strength, self.radius)
        after = self._kernels(pl_module)
        norm = torch.linalg.vector_norm(before)
        self._shifts.append(float(torch.linalg.vector_norm(after - before) / norm) if norm > 0 else 0.0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = bool(trainer.loggers)
        pl_module.log("train/dynamic_sharing_steps", float(trainer.global_step // self.every), logger=logger)
        if self._shifts:
            shift = sum(self._shifts) / len(self._shifts)
            pl_module.log("train/dynamic_sharing_shift", shift, logger=logger)
