"""The batches of a pack: each member's own index batches, gathered and augmented together.

Member ``k``'s batches are exactly its single run's: its own train/val split
(:class:`~weightshare.data.datamodule.TensorDataModule` with the shared dataset), its own
shuffle (:class:`~weightshare.data.datamodule.EpochBatchSampler` seeded by ``mix_seed(seed,
fold)`` and the epoch), its own augmentation levels and draws (keyed by ``(seed, fold,
epoch, sample index)``, :mod:`weightshare.augment.keyed_rng`), and the evaluation
perturbations keyed by sample index. The K members' batches of a step are stacked member-
major into one (K*B, C, H, W) batch: one gather, one augmentation call, no loop over
members in the step (the per-epoch shuffles are K small ``randperm`` calls on the CPU).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from weightshare.augment import EvalVariants
from weightshare.augment.keyed import keyed_train_augment
from weightshare.augment.keyed_rng import SampleKeys, train_key
from weightshare.data import ArrayDataset
from weightshare.data.datamodule import PRECISION_BATCH_DTYPES, EpochBatchSampler, TensorDataModule, mix_seed

__all__ = ["PackData"]

_LEVELS = ("translate", "rotate", "noise", "edge_noise")


class PackData:
    """Images on the device, the members' splits, and the stacked train/eval batches."""

    def __init__(self, cfgs: list[DictConfig], dataset: ArrayDataset, device: torch.device) -> None:
        self.cfgs = cfgs
        self.device = device
        # the single run's batch dtype (augmentation in float32, then cast), see TensorDataModule
        self.dtype = PRECISION_BATCH_DTYPES[str(cfgs[0].trainer.precision)]
        self.images = dataset.images.to(device)
        self.labels = dataset.labels.to(device)
        self.splits: list[tuple[torch.Tensor, torch.Tensor]] = []
        for cfg in cfgs:
            dm = TensorDataModule(cfg.data, cfg.aug, cfg.eval, seed=cfg.seed, dataset=dataset)
            dm.setup("fit")
            assert dm.train_idx is not None and dm.val_idx is not None
            self.splits.append((dm.train_idx, dm.val_idx))
        c0 = cfgs[0]
        self.batch_size = int(c0.data.batch_size)
        self.eval_batch_size = int(c0.data.eval_batch_size or c0.data.batch_size)
        self.shuffle = bool(c0.data.shuffle)
        self.eval_variants = EvalVariants(c0.eval)
        a = c0.aug
        self.aug_settings = {
            "edge_width": int(a.edge_width),
            "faithful_edge_noise": bool(a.faithful_edge_noise),
            "crop_padding": int(a.crop_padding),
            "hflip": bool(a.hflip),
        }
        self.levels = {name: torch.tensor([float(c.aug[name]) for c in cfgs], dtype=torch.float64) for name in _LEVELS}

    def sizes(self, k: int) -> tuple[int, int]:
        return len(self.splits[k][0]), len(self.splits[k][1])

    def _to_dtype(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)

    # ------------------------------------------------------------------ train
    def train_batches(self, members: list[int], epoch: int) -> list[torch.Tensor]:
        """The epoch's index batches of ``members``: a list of (K, B) tensors (members' sizes agree)."""
        per_member = []
        for k in members:
            cfg = self.cfgs[k]
            sampler = EpochBatchSampler(
                self.splits[k][0], self.batch_size, shuffle=self.shuffle, seed=mix_seed(cfg.seed, cfg.data.fold)
            )
            sampler.set_epoch(epoch)
            per_member.append(list(sampler))
        return [torch.stack(step).to(self.device) for step in zip(*per_member)]

    def epoch_keys(self, members: list[int], epoch: int) -> torch.Tensor:
        """(K,) int64 augmentation keys of ``members`` in ``epoch``."""
        keys = [train_key(self.cfgs[k].seed, self.cfgs[k].data.fold, epoch) for k in members]
        return torch.tensor(keys, dtype=torch.int64, device=self.device)

    def train_batch(
        self, index: torch.Tensor, keys: torch.Tensor, members: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked (K*B, C, H, W) augmented images and (K*B,) labels of the (K, B) ``index``."""
        B = index.shape[1]
        flat = index.reshape(-1)
        x = self.images[flat].float().div_(255.0)
        y = self.labels[flat]
        sel = torch.tensor(members, dtype=torch.long)
        levels = {n: lv.index_select(0, sel) for n, lv in self.levels.items()}
        active = any(bool((lv > 0).any()) for lv in levels.values())
        if active or self.aug_settings["crop_padding"] > 0 or self.aug_settings["hflip"]:
            per_sample = {n: lv.to(self.device).repeat_interleave(B) for n, lv in levels.items()}
            sk = SampleKeys(keys.repeat_interleave(B), flat)
            x = keyed_train_augment(x, sk, **per_sample, **self.aug_settings, member_batch=B)
        return self._to_dtype(x), y

    # ------------------------------------------------------------------ eval
    def eval_batches(self, members: list[int]) -> list[torch.Tensor]:
        """The validation index batches of ``members`` (unshuffled): a list of (K, Bv) tensors."""
        per_member = [torch.split(self.splits[k][1], self.eval_batch_size) for k in members]
        return [torch.stack(step).to(self.device) for step in zip(*per_member)]

    def eval_batch(self, index: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Every evaluation variant of the (K, Bv) ``index`` as (K*Bv, C, H, W), and the labels."""
        flat = index.reshape(-1)
        x = self.images[flat].float().div_(255.0)
        variants = self.eval_variants(x, flat)
        return {name: self._to_dtype(v) for name, v in variants.items()}, self.labels[flat]
