"""``ArrayDataset``: a whole dataset as one uint8 image tensor plus int64 labels.

Every reader returns this one type, so the data module, the splits and the tests never
need to know which dataset they hold. The official training images come first and the
official test images after them, because the protocol's k-fold split runs over the
concatenation in exactly that order (see ``docs/architecture.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weightshare.errors import DataError


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its input (the data package owns this type)."""

    name: str
    in_channels: int
    height: int
    width: int
    num_classes: int


@dataclass
class ArrayDataset:
    """Images, labels and where the official training set ends.

    ``__post_init__`` checks the contract (uint8 NCHW images, int64 labels of the same
    length, ``0 <= n_train <= N``, labels in ``[0, num_classes)``) so that a reader bug
    surfaces here, naming the dataset, instead of as a shape error deep in training.
    """

    name: str  # "mnist", "cifar10", "digits", "synthetic"
    images: torch.Tensor  # uint8, (N, C, H, W), official train images first, then test
    labels: torch.Tensor  # int64, (N,)
    n_train: int  # the first n_train rows are the official training set
    num_classes: int

    def __post_init__(self) -> None:
        where = f"dataset {self.name!r}"
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"{where}: images must be a uint8 tensor (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise DataError(
                f"{where}: labels must be an int64 tensor (N,), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        n = self.images.shape[0]
        if self.labels.shape[0] != n:
            raise DataError(f"{where}: {n} images but {self.labels.shape[0]} labels")
        if not 0 <= self.n_train <= n:
            raise DataError(f"{where}: n_train={self.n_train} is outside [0, {n}]")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes):
            raise DataError(
                f"{where}: labels span [{int(self.labels.min())}, {int(self.labels.max())}], "
                f"expected [0, {self.num_classes - 1}]"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def info(self) -> DataInfo:
        """The shape facts a model is built from."""
        _, c, h, w = self.images.shape
        return DataInfo(name=self.name, in_channels=c, height=h, width=w, num_classes=self.num_classes)
