"""The batches of a pack: each member's own single-run data module, batches side by side.

Member ``k``'s batches are exactly its single run's, because they come from its single run's
:class:`~weightshare.data.datamodule.TensorDataModule` (built from its ``data``, ``aug`` and
``eval`` config by the same constructor, with the checks that constructor makes): its split,
its shuffle of each epoch, its augmentation levels and keyed draws, its evaluation
perturbations. One copy of the images serves every member. A step's batch holds the batches
of the members still training (:attr:`PackData.active`), stacked as (M, B, ...), and their
ids, so a member that has left costs nothing, not even its augmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from weightshare.data.datamodule import TensorDataModule

__all__ = ["PackData"]


class _Zipped:
    """The members' loaders of one kind, zipped over the members active when an epoch starts."""

    def __init__(self, data: PackData, loaders: list[Any]) -> None:
        self.data, self.loaders = data, loaders

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[int]]]:
        ids = list(self.data.active())
        trainer = self.data.trainer
        for k in ids:  # Lightning sets the epoch of the loader it knows; these are inside this one
            self.loaders[k].sampler.set_epoch(trainer.current_epoch if trainer is not None else 0)
        for batches in zip(*(self.loaders[k] for k in ids)):
            yield list(batches), ids


class PackData(pl.LightningDataModule):
    """The members' data modules as one; ``active`` returns the ids of the members training."""

    def __init__(self, members: Sequence[TensorDataModule], active: Callable[[], Sequence[int]]) -> None:
        super().__init__()
        self.members = list(members)
        self.active = active
        sizes = {(len(m.train_idx), len(m.val_idx)) for m in self.members}  # type: ignore[arg-type]
        if len(sizes) > 1:
            raise ValueError(f"pack members have different train/val sizes {sorted(sizes)}: they cannot step together")

    def train_dataloader(self) -> _Zipped:
        return _Zipped(self, [m.train_dataloader() for m in self.members])

    def val_dataloader(self) -> _Zipped:
        return _Zipped(self, [m.val_dataloader() for m in self.members])

    def test_dataloader(self) -> _Zipped:
        return _Zipped(self, [m.test_dataloader() for m in self.members])

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Each member's own ``on_after_batch_transfer`` (gather, augment, cast), stacked."""
        index, ids = batch
        first = self.members[ids[0]]
        images, labels = first._on_device(index[0].device)
        parts = []
        for k, idx in zip(ids, index):
            m = self.members[k]
            m.trainer = self.trainer
            m._images, m._labels = images, labels  # one copy of the data set on the device
            parts.append(m.on_after_batch_transfer(idx, dataloader_idx))
        if isinstance(parts[0], dict):
            xs = {v: torch.stack([p["x"][v] for p in parts]) for v in parts[0]["x"]}
            return {"x": xs, "y": torch.stack([p["y"] for p in parts]), "ids": ids}
        return torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]), ids
