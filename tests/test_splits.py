"""The protocol's k-fold split and the standard split, checked against scikit-learn's KFold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import KFold

from weightshare.data import Split, make_split
from weightshare.errors import ConfigError


def _check_partition(split: Split, n_total: int) -> None:
    """int64, ascending, disjoint, and together exactly 0..n_total-1."""
    assert split.train_idx.dtype == torch.int64 and split.val_idx.dtype == torch.int64
    both = torch.cat([split.train_idx, split.val_idx])
    assert torch.equal(torch.sort(both).values, torch.arange(n_total))
    assert not torch.isin(split.val_idx, split.train_idx).any()
    assert torch.all(split.train_idx[1:] > split.train_idx[:-1])


def test_mnist_kfold_is_the_protocol() -> None:
    for fold in range(5):
        split = make_split("kfold", 70_000, 60_000, fold=fold)
        assert len(split.train_idx) == 56_000 and len(split.val_idx) == 14_000
        assert torch.equal(split.val_idx, torch.arange(fold * 14_000, (fold + 1) * 14_000))
        _check_partition(split, 70_000)
    split = make_split("kfold", 70_000, 60_000, fold=3)
    assert split.val_idx[0] == 42_000 and split.val_idx[-1] == 55_999
    expected_train = torch.cat([torch.arange(0, 42_000), torch.arange(56_000, 70_000)])
    assert torch.equal(split.train_idx, expected_train)


def test_cifar_kfold_sizes() -> None:
    for fold in range(5):
        split = make_split("kfold", 60_000, 50_000, fold=fold)
        assert (len(split.train_idx), len(split.val_idx)) == (48_000, 12_000)
        assert int(split.val_idx[0]) == fold * 12_000


def test_validation_folds_tile_the_dataset() -> None:
    """The five validation folds are contiguous, consecutive and cover every row once."""
    n = 1797
    vals = [make_split("kfold", n, 1438, fold=k).val_idx for k in range(5)]
    assert [len(v) for v in vals] == [360, 360, 359, 359, 359]
    for v in vals:
        assert torch.equal(v, torch.arange(int(v[0]), int(v[0]) + len(v)))
    assert torch.equal(torch.cat(vals), torch.arange(n))


@pytest.mark.parametrize(
    ("n_total", "n_folds"),
    [
        (n, k)
        for n in (5, 7, 10, 11, 99, 1797, 2048, 60_003, 70_000)
        for k in (2, 3, 5, 10)
        if k <= n  # sklearn needs at least n_folds rows
    ],
)
def test_kfold_equals_sklearn(n_total: int, n_folds: int) -> None:
    reference = KFold(n_splits=n_folds).split(np.zeros(n_total))
    for fold, (train, val) in enumerate(reference):
        split = make_split("kfold", n_total, n_total // 2, fold=fold, n_folds=n_folds)
        assert np.array_equal(split.train_idx.numpy(), train)
        assert np.array_equal(split.val_idx.numpy(), val)


@settings(max_examples=60, deadline=None)
@given(n_total=st.integers(2, 500), data=st.data())
def test_kfold_equals_sklearn_property(n_total: int, data: st.DataObject) -> None:
    n_folds = data.draw(st.integers(2, min(n_total, 12)))
    fold = data.draw(st.integers(0, n_folds - 1))
    train, val = list(KFold(n_splits=n_folds).split(np.zeros(n_total)))[fold]
    split = make_split("kfold", n_total, 1, fold=fold, n_folds=n_folds)
    assert np.array_equal(split.train_idx.numpy(), train)
    assert np.array_equal(split.val_idx.numpy(), val)


def test_standard_split_is_official_train_and_test() -> None:
    split = make_split("standard", 70_000, 60_000, fold=4)  # fold is ignored
    assert torch.equal(split.train_idx, torch.arange(60_000))
    assert torch.equal(split.val_idx, torch.arange(60_000, 70_000))
    _check_partition(split, 70_000)
    train, val = make_split("standard", 60_000, 50_000)  # a NamedTuple unpacks
    assert (len(train), len(val)) == (50_000, 10_000)


@pytest.mark.parametrize(
    ("kwargs", "key", "value", "allowed"),
    [
        ({"split": "random"}, "data.split", "random", "['kfold', 'standard']"),
        ({"fold": 5}, "data.fold", 5, "[0, 4]"),
        ({"fold": -1}, "data.fold", -1, "[0, 4]"),
        ({"fold": True}, "data.fold", True, "[0, 4]"),
        ({"fold": 2, "n_folds": 2}, "data.fold", 2, "[0, 1]"),
        ({"n_folds": 1}, "data.n_folds", 1, "[2, 100]"),
        ({"n_folds": 101}, "data.n_folds", 101, "[2, 100]"),
    ],
)
def test_bad_choices_name_key_value_and_allowed(kwargs: dict, key: str, value: object, allowed: str) -> None:
    args = {"split": "kfold", "n_total": 100, "n_train": 80, **kwargs}
    with pytest.raises(ConfigError) as info:
        make_split(**args)
    err = info.value
    assert (err.key, err.value) == (key, value)
    assert allowed in str(err) and key in str(err) and repr(value) in str(err)


def test_standard_split_needs_a_test_part() -> None:
    with pytest.raises(ConfigError, match=r"data\.split='standard'.*kfold"):
        make_split("standard", 100, 100)
