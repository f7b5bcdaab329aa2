"""Writes ``metrics.csv``: one row per finished epoch, every scalar the run logged.

Kept separate from Lightning's CSVLogger because that one appends a row per logging call and
duplicates epochs after a resume; this table has each epoch exactly once.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from weightshare.results import EpochTable


class EpochCSVWriter(pl.Callback):
    """Append the epoch's ``trainer.callback_metrics`` to ``metrics.csv`` at epoch end.

    Put it after every callback that logs in ``on_train_epoch_end`` so their values land in
    the same row.
    """

    def __init__(self, path: str | Path) -> None:
        self.table = EpochTable(path)
        self._before: dict[str, object] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.table.load()
        # a resumed run starts at the epoch after its checkpoint: drop anything later
        self.table.truncate(trainer.current_epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # callback_metrics keeps values of earlier epochs (e.g. filter distances computed every
        # n epochs, validation every n epochs): remember them to write only this epoch's values
        self._before = dict(trainer.callback_metrics)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row: dict[str, float | int] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for name, value in trainer.callback_metrics.items():
            if self._before.get(name) is value:
                continue  # not logged this epoch
            if (isinstance(value, torch.Tensor) and value.numel() == 1) or isinstance(value, (int, float)):
                row[name] = float(value)
        self.table.append(row)
