"""Per-epoch training throughput (images/s), epoch wall time and learning rate."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl


class ThroughputMonitor(pl.Callback):
    """Logs ``train/images_per_s`` (training batches only), ``time/epoch_s`` and the epoch's ``lr``."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self._t_train_end = 0.0
        self._images = 0
        self._lr: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._t_train_end = self._t0
        self._images = 0
        # read now: Lightning steps epoch-interval schedulers before on_train_epoch_end
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += int(batch[1].shape[0])
        self._t_train_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        train_s = max(self._t_train_end - self._t0, 1e-9)
        pl_module.log("train/images_per_s", self._images / train_s)
        pl_module.log("time/epoch_s", time.perf_counter() - self._t0)
        if self._lr is not None:
            pl_module.log("lr", self._lr)
