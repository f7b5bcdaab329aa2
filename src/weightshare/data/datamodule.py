"""The Lightning data module: the whole dataset as one uint8 tensor on the training device.

Why not a torchvision-style Dataset of PIL images: the paper's networks are tiny, so a
per-sample Python pipeline (decode, transform, collate) would cost more than the training
step. Here the loader yields only index batches; the images are moved to the device once,
and gathering, scaling to [0, 1] and augmentation happen batched on the device in
:meth:`TensorDataModule.on_after_batch_transfer`.

Randomness: the training order of epoch ``e`` comes from a generator seeded with
``(seed, fold, e)``; the training augmentation of a sample is keyed by ``(seed, fold, e,
sample index)`` (a counter-based generator, :mod:`weightshare.augment.keyed_rng`), so a run
resumed from an epoch-end checkpoint sees exactly the batches an uninterrupted run would,
and a packed sweep's members see exactly their single runs' images.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from weightshare.augment import EvalVariants, TrainAugmenter
from weightshare.augment.keyed_rng import SampleKeys, train_key
from weightshare.data import ArrayDataset, load_dataset, make_split
from weightshare.data.dataset import DataInfo
from weightshare.errors import ConfigError

_SEED_MIX = 1_000_003

#: every ``trainer.precision`` the trainer accepts -> the dtype of the batches it trains on
#: (Lightning's transformer-engine precisions are left out: they replace only Linear and
#: LayerNorm layers, need NVIDIA's library, and do not apply to convolutional networks).
#: "-true" precisions hold the weights in that dtype, so the batch must be too; "-mixed" ones
#: keep float32 weights and batches and autocast the operations.
PRECISION_BATCH_DTYPES: dict[str, torch.dtype] = {
    "32-true": torch.float32,
    "32": torch.float32,
    "64-true": torch.float64,
    "64": torch.float64,
    "16-mixed": torch.float32,
    "16": torch.float32,
    "bf16-mixed": torch.float32,
    "bf16": torch.float32,
    "bf16-true": torch.bfloat16,
    "16-true": torch.float16,
}
PRECISIONS: tuple[str, ...] = tuple(PRECISION_BATCH_DTYPES)


def mix_seed(*parts: int) -> int:
    """A stable 63-bit seed from integer parts (Python's hash() is salted per process)."""
    s = 0x9E3779B97F4A7C15
    for p in parts:
        s = (s * _SEED_MIX + int(p) + 0x632BE59BD9B4E019) & 0x7FFFFFFFFFFFFFFF
    return s


class EpochBatchSampler(Sampler[torch.Tensor]):
    """Yields index tensors; the shuffle of epoch ``e`` is seeded by ``(seed, e)``.

    Lightning calls :meth:`set_epoch` before every epoch (also after a resume), which is
    what makes the order reproducible without saving sampler state.
    """

    def __init__(self, indices: torch.Tensor, batch_size: int, *, shuffle: bool, seed: int) -> None:
        self.indices = indices
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.indices) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        idx = self.indices
        if self.shuffle:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            idx = idx[torch.randperm(len(idx), generator=gen)]
        yield from torch.split(idx, self.batch_size)


class _IndexIdentity(Dataset):
    """``dataset[index_batch] -> index_batch``: the loader only carries indices."""

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return index

    def __len__(self) -> int:  # pragma: no cover - never asked with batch_size=None
        return 0


class TensorDataModule(pl.LightningDataModule):
    """Dataset on the device, index batches, device-side gather/scale/augment."""

    def __init__(
        self,
        data: DictConfig,
        aug: DictConfig,
        eval_cfg: DictConfig,
        seed: int = 0,
        dataset: ArrayDataset | None = None,
        precision: str = "32-true",
    ) -> None:
        """``dataset`` given: use it instead of reading ``data.name`` (benchmarks, notebooks).

        ``precision`` is the trainer's: batches are cast to its dtype (float64 for ``64-true``,
        bfloat16 for ``bf16-true``, ...) after augmentation, which always runs in float32.
        """
        super().__init__()
        if precision not in PRECISION_BATCH_DTYPES:
            raise ConfigError("trainer.precision", precision, f"one of {list(PRECISIONS)}")
        self.batch_dtype = PRECISION_BATCH_DTYPES[precision]
        self.cfg = data
        self.seed = seed
        self.augmenter = TrainAugmenter(aug)
        self.eval_variants = EvalVariants(eval_cfg)
        self.dataset: ArrayDataset | None = dataset
        self.train_idx: torch.Tensor | None = None
        self.val_idx: torch.Tensor | None = None
        self._images: torch.Tensor | None = dataset.images if dataset is not None else None
        self._labels: torch.Tensor | None = dataset.labels if dataset is not None else None

    # ------------------------------------------------------------------ setup
    def load(self) -> ArrayDataset:
        """Read the dataset once (readers verify checksums and raise DataError)."""
        if self.dataset is None:
            c = self.cfg
            opts = dict(c.options or {})  # the reader's keyword arguments, checked against its signature
            self.dataset = load_dataset(
                c.name, c.root, download=c.download, verify_checksums=c.verify_checksums, **opts
            )
            self._images = self.dataset.images
            self._labels = self.dataset.labels
        return self.dataset

    def setup(self, stage: str | None = None) -> None:
        ds = self.load()
        if self.train_idx is not None:
            return
        split = make_split(self.cfg.split, len(ds.labels), ds.n_train, fold=self.cfg.fold, n_folds=self.cfg.n_folds)
        self.train_idx, self.val_idx = split.train_idx, split.val_idx
        if self.cfg.limit_train is not None:
            self.train_idx = self.train_idx[: self.cfg.limit_train]
        if self.cfg.limit_val is not None:
            self.val_idx = self.val_idx[: self.cfg.limit_val]

    @property
    def info(self) -> DataInfo:
        return self.load().info

    # ------------------------------------------------------------ dataloaders
    def _loader(self, indices: torch.Tensor, batch_size: int, shuffle: bool) -> DataLoader:
        sampler = EpochBatchSampler(indices, batch_size, shuffle=shuffle, seed=mix_seed(self.seed, self.cfg.fold))
        return DataLoader(_IndexIdentity(), sampler=sampler, batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        assert self.train_idx is not None, "setup() first"
        return self._loader(self.train_idx, self.cfg.batch_size, shuffle=self.cfg.shuffle)

    def _eval_loader(self) -> DataLoader:
        assert self.val_idx is not None, "setup() first"
        return self._loader(self.val_idx, self.cfg.eval_batch_size or self.cfg.batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader:
        """The protocol has no separate test set: the test stage scores the held-out fold."""
        return self._eval_loader()

    # ------------------------------------------------------- device-side batch
    def _on_device(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._images is not None and self._labels is not None
        if self._images.device != device:
            self._images = self._images.to(device)
            self._labels = self._labels.to(device)
        return self._images, self._labels

    def train_keys(self, index: torch.Tensor, epoch: int) -> SampleKeys:
        """The augmentation keys of the training samples ``index`` in ``epoch``."""
        return SampleKeys(train_key(self.seed, self.cfg.fold, epoch), index)

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images of ``index`` scaled to [0, 1] (float32) and their labels, on index's device."""
        images, labels = self._on_device(index.device)
        return images[index].float().div_(255.0), labels[index]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        index = batch
        x, y = self.gather(index)
        trainer = self.trainer
        training = trainer is not None and trainer.training
        if training:
            if self.augmenter.active:
                x = self.augmenter(x, self.train_keys(index, trainer.current_epoch))
            return x.to(self.batch_dtype), y
        # evaluation: the perturbation is keyed by each sample's index, so every model and every
        # epoch of a sweep (any eval batch size, any device, packed or not) is scored on the same
        # perturbed images
        variants = self.eval_variants(x, index)
        return {"x": {name: v.to(self.batch_dtype) for name, v in variants.items()}, "y": y}
