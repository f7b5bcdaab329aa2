"""Packed sweeps: many jobs of a multirun trained as one network by one Lightning Trainer.

Public API (used by the ``hydra/launcher=packed`` plugin):

- :func:`unpackable_reason` (``cfg -> str | None``) and :func:`pack_key` (``cfg -> tuple``):
  which jobs can share a pack (:mod:`.key`);
- :func:`train_pack` (``cfgs -> list[float | None]``): train a pack, each member writing
  exactly what its single job writes (:mod:`.train`).

Modules: :mod:`.key` (grouping), :mod:`.data` (the members' batches side by side),
:mod:`.member` (a member's job, its single-run callbacks and loggers), :mod:`.train` (the
Trainer and sub-packs). The pack's LightningModule is :mod:`weightshare.pack_module`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from weightshare.packed.key import pack_key, unpackable_reason

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omegaconf import DictConfig

__all__ = ["pack_key", "train_pack", "unpackable_reason"]


def train_pack(cfgs: Sequence[DictConfig]) -> list[float | None]:
    """Train the members as one pack (see :func:`weightshare.packed.train.train_pack`)."""
    from weightshare.packed.train import train_pack as _train_pack

    return _train_pack(cfgs)
