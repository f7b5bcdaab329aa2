"""Packed sweeps: many jobs of a multirun trained as one stacked network in one process.

Public API (used by the ``hydra/launcher=packed`` plugin):

- :func:`unpackable_reason` (``cfg -> str | None``) and :func:`pack_key` (``cfg -> tuple``):
  which jobs can share a pack (:mod:`.key`);
- :func:`train_pack` (``cfgs -> list[float | None]``): train a pack, each member writing
  exactly what its single job writes (:mod:`.trainer`).

Modules: :mod:`.key` (grouping), :mod:`.stacked_free_conv` (the free convolution of K
members as one batched matmul), :mod:`.stacked_net` (the paper networks of K members),
:mod:`.adam` (per-member Adam), :mod:`.data` (the members' batches), :mod:`.member`
(per-member outputs and control), :mod:`.trainer` (the loop), :mod:`.runtime` (SIGTERM flag,
device, schedule factors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from weightshare.packed.key import pack_key, unpackable_reason

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omegaconf import DictConfig

__all__ = ["pack_key", "train_pack", "unpackable_reason"]


def train_pack(cfgs: Sequence[DictConfig]) -> list[float | None]:
    """Train the members as one pack (see :func:`weightshare.packed.trainer.train_pack`)."""
    from weightshare.packed.trainer import train_pack as _train_pack

    return _train_pack(cfgs)
