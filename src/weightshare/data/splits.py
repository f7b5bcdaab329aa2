"""Train/validation index splits: the protocol's contiguous k-fold, and the standard split.

``kfold`` reproduces ``sklearn.model_selection.KFold(n_splits=n_folds)`` without shuffling
over the official train and test sets concatenated: fold ``k`` is a contiguous block, and
the first ``n_total % n_folds`` folds hold one element more (MNIST: 70,000 -> 56,000 train
/ 14,000 validation; CIFAR-10: 48,000 / 12,000). ``standard`` trains on the official
training set ``[0, n_train)`` and validates on the official test set ``[n_train, n_total)``.

Why not call scikit-learn here: a fold is two ``arange`` calls, while importing
scikit-learn at start costs about a second per run and its generator yields numpy arrays of
every fold; the tests check equality with ``KFold`` for many sizes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from weightshare.errors import ConfigError

__all__ = ["SPLITS", "Split", "fold_bounds", "make_split"]

SPLITS = ("kfold", "standard")


class Split(NamedTuple):
    """Row indices (int64, ascending) of the training and the validation part."""

    train_idx: torch.Tensor
    val_idx: torch.Tensor


def fold_bounds(n_total: int, fold: int, n_folds: int) -> tuple[int, int]:
    """``[start, stop)`` of validation fold ``fold``, with sklearn's fold sizes."""
    base, extra = divmod(n_total, n_folds)
    start = fold * base + min(fold, extra)
    return start, start + base + (1 if fold < extra else 0)


def make_split(split: str, n_total: int, n_train: int, fold: int = 0, n_folds: int = 5) -> Split:
    """Indices of the training and validation rows of a dataset of ``n_total`` rows.

    ``fold`` and ``n_folds`` matter only for ``kfold``. Bad choices raise ConfigError
    naming the config key (``data.split``, ``data.fold``, ``data.n_folds``).
    """
    if split not in SPLITS:
        raise ConfigError("data.split", split, f"one of {list(SPLITS)}")
    if not 0 <= n_train <= n_total:
        raise ValueError(f"n_train={n_train} must lie in [0, n_total={n_total}]")
    if split == "standard":
        if not 0 < n_train < n_total:
            raise ConfigError(
                "data.split",
                split,
                f"kfold: this dataset has {n_train} official training rows of {n_total}, "
                "so it has no official train/test division",
            )
        return Split(torch.arange(n_train, dtype=torch.int64), torch.arange(n_train, n_total, dtype=torch.int64))
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or not 2 <= n_folds <= n_total:
        raise ConfigError("data.n_folds", n_folds, f"an integer in [2, {n_total}] (the number of rows)")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < n_folds:
        raise ConfigError("data.fold", fold, f"an integer in [0, {n_folds - 1}] (data.n_folds={n_folds})")
    start, stop = fold_bounds(n_total, fold, n_folds)
    train = torch.cat([torch.arange(0, start, dtype=torch.int64), torch.arange(stop, n_total, dtype=torch.int64)])
    return Split(train, torch.arange(start, stop, dtype=torch.int64))
