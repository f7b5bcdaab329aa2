"""What packs since the torch.func engine (issue #17): ResNets, SGD, init_from, mixed masks, checkpoints.

As ``tests/test_packed_exact.py``: K members trained as single runs and as one pack on tiny
synthetic data in float64, every metrics.csv column but timings, results.json and the
checkpoints' weights (BatchNorm running statistics included) compared to 1e-9. Then a
member's checkpoint resumed as a single run, and a single run's checkpoint resumed in a pack.
"""

from __future__ import annotations

import pytest
import torch

from packed_helpers import assert_pack_equals_single_runs, assert_same_runs, make_cfg, run_single
from weightshare.packed import train_pack
from weightshare.results import read_json

MEMBERS = [
    ["data.fold=0", "seed=0", "aug.translate=0.2"],
    ["data.fold=1", "seed=1", "optimizer.lr=0.003"],
]
WRN = ["model.arch=wide", "model.depth=10", "model.widen_factor=1", "trainer.max_epochs=1"]

CASES = {
    # BatchNorm: every member keeps its own running statistics
    "resnet": (["model=resnet", *WRN, "scheduler=cosine"], MEMBERS),
    "sharesnet": pytest.param((["model=sharesnet", *WRN, "model.depth=16"], MEMBERS), marks=pytest.mark.slow),
    "sgd_multistep": (
        ["model=cnn", "optimizer=sgd", "scheduler=multistep", "scheduler.milestones=[1]"],
        [[*MEMBERS[0], "optimizer.lr=0.05"], [*MEMBERS[1], "optimizer.lr=0.02"]],
    ),
    # stack_module_state would take member 0's buffers: an unmasked member 0 would drop the masks
    "unmasked_first": (
        ["model=fcn"],
        [
            MEMBERS[0],
            [*MEMBERS[1], "model.connectivity=0.3"],
            ["data.fold=2", "seed=2", "model.connectivity=0.2", "model.connectivity_mode=input"],
        ],
    ),
}


@pytest.mark.parametrize("case", [CASES[k] for k in sorted(CASES)], ids=sorted(CASES))
def test_pack_equals_single_runs(tmp_path, case):
    common, members = case
    assert_pack_equals_single_runs(tmp_path, common, members)


def test_init_from_members_equal_their_single_runs(tmp_path):
    """FCNs started from a CNN checkpoint (one member) and from scratch (the other) in one pack."""
    run_single(make_cfg(tmp_path / "cnn", ["model=cnn", "trainer.max_epochs=1"]))
    ckpt = tmp_path / "cnn" / "checkpoints" / "last.ckpt"
    members = [[*MEMBERS[0], f"model.init_from={ckpt}"], MEMBERS[1]]
    assert_pack_equals_single_runs(tmp_path / "x", ["model=fcn"], members)


def test_checkpoints_move_between_packs_and_single_runs(tmp_path):
    """A member's last.ckpt resumes as a single run, and a single run's last.ckpt in a pack.

    Both continue the uninterrupted runs (Lightning's resume itself moves float64 weights by
    ~1e-8, so 1e-6 here) and say they resumed.
    """
    common = ["model=fcn", "trainer.max_epochs=2"]
    for i, m in enumerate(MEMBERS):
        run_single(make_cfg(tmp_path / f"ref{i}", [*common, *m]))
    # member 0 starts in a pack, member 1 alone; both are stopped after epoch 0
    first = ["model=fcn", "trainer.max_epochs=1"]
    train_pack([make_cfg(tmp_path / "run0", [*first, *MEMBERS[0]])])
    run_single(make_cfg(tmp_path / "run1", [*first, *MEMBERS[1]]))
    for i in range(2):
        assert torch.load(tmp_path / f"run{i}" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    # and each goes on in the other engine
    run_single(make_cfg(tmp_path / "run0", [*common, *MEMBERS[0], "ckpt_path=last"]))
    train_pack([make_cfg(tmp_path / "run1", [*common, *MEMBERS[1], "ckpt_path=last"])])
    for i in range(2):
        assert_same_runs(tmp_path / f"ref{i}", tmp_path / f"run{i}", tol=1e-6)
    assert read_json(tmp_path / "run1" / "results.json")["pack"]["size"] == 1
    assert "pack" not in read_json(tmp_path / "run0" / "results.json")


def test_results_keep_the_pack_apart_from_the_members_cost(tmp_path):
    """``pack: {id, size, elapsed_s}``; a member's ``wall_time_s`` is its share, not the pack's time."""
    common = ["model=cnn", "trainer.max_epochs=1"]
    train_pack([make_cfg(tmp_path / f"m{i}", [*common, *m]) for i, m in enumerate(MEMBERS)])
    a, b = (read_json(tmp_path / f"m{i}" / "results.json") for i in range(2))
    assert a["pack"]["id"] == b["pack"]["id"] and a["pack"]["size"] == b["pack"]["size"] == 2
    for r in (a, b):
        assert 0 < r["wall_time_s"] < r["pack"]["elapsed_s"]
