"""A pack of K members gives the same per-epoch metrics and weights as the K single runs (float64).

Each test trains K members on tiny synthetic data once as single runs (the ordinary
``weightshare.train.train`` path, Lightning) and once as a pack (``train_pack``), with
members differing in fold, seed, augmentation type/level and learning rate (and masks or
penalty weights where the model has them), and compares every metrics.csv column but the
timings, results.json's final/best/test/init sections, and the checkpoints, to 1e-9.
"""

from __future__ import annotations

import pytest

from packed_helpers import assert_pack_equals_single_runs

MEMBERS = [
    ["data.fold=0", "seed=0", "aug.translate=0.2"],
    ["data.fold=1", "seed=1", "optimizer.lr=0.003"],
    ["data.fold=2", "seed=2", "aug.noise=0.1", "aug.rotate=0.1"],
]

CASES = {
    "cnn": (["model=cnn"], MEMBERS),
    "fcn": (["model=fcn"], MEMBERS),
    "vcp_both_modes": (
        ["model=fcn"],
        [
            [*MEMBERS[0], "model.connectivity=0.3"],  # weight mode
            [*MEMBERS[1], "model.connectivity=0.2", "model.connectivity_mode=input"],
            [*MEMBERS[2], "aug.edge_noise=0.2"],  # no mask
        ],
    ),
    "tiled": (["model=fcn", "model.share_tile=2"], MEMBERS[:2]),
    "share_penalty": (
        ["model=fcn"],
        [[*MEMBERS[0], "model.share_penalty=0.01"], [*MEMBERS[1], "model.share_penalty=0.0"]],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pack_equals_single_runs(tmp_path, case):
    common, members = CASES[case]
    assert_pack_equals_single_runs(tmp_path, common, members)
