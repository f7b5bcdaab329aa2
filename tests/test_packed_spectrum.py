"""Packs of the sharing-spectrum mechanisms (issue #13) equal their single runs (float64, 1e-9).

As ``tests/test_packed_exact.py``: K members trained as single runs and as one pack on tiny
synthetic data, every metrics.csv column but timings, results.json and checkpoint weights
compared to 1e-9, and the filter images written compared by name. Members differ in fold,
seed, augmentation, learning rate and the per-member settings of each mechanism (penalty
weight, masks, dynamic-sharing strength, FCN init).
"""

from __future__ import annotations

import pytest

from packed_helpers import assert_pack_equals_single_runs, assert_same_runs, make_cfg
from weightshare.packed import train_pack
from weightshare.results import read_json, read_metrics_csv

MEMBERS = [
    ["data.fold=0", "seed=0", "aug.translate=0.2"],
    ["data.fold=1", "seed=1", "optimizer.lr=0.003"],
    ["data.fold=2", "seed=2", "aug.noise=0.1", "aug.rotate=0.1"],
]
L1 = ["model=fcn", "model.share_penalty_kind=l1_all_pairs"]
DYN = ["model=fcn", "model.dynamic_sharing.every=3"]  # 8 steps an epoch: shares at steps 3, 6 | 9, 12, 15

CASES = {
    "l1_all_pairs": (
        L1,
        [
            [*MEMBERS[0], "model.share_penalty=0.01"],
            [*MEMBERS[1], "model.share_penalty=0.003", "model.connectivity=0.3"],
            [*MEMBERS[2], "model.share_penalty=0.02", "model.connectivity=0.2", "model.connectivity_mode=input"],
        ],
    ),
    "l1_all_pairs_tiled": (
        [*L1, "model.share_tile=2"],
        [[*MEMBERS[0], "model.share_penalty=0.01"], [*MEMBERS[1], "model.share_penalty=0.05"]],
    ),
    "dynamic_global": (
        DYN,
        [
            [*MEMBERS[0], "model.dynamic_sharing.strength=0.5"],
            [*MEMBERS[1], "model.dynamic_sharing.strength=1.0", "model.connectivity=0.3"],
            [
                *MEMBERS[2],
                "model.dynamic_sharing.strength=0.2",
                "model.connectivity=0.2",
                "model.connectivity_mode=input",
            ],
        ],
    ),
    "dynamic_radius": (
        [*DYN, "model.dynamic_sharing.radius=1", "model.share_penalty=0.01"],
        [[*MEMBERS[0], "model.dynamic_sharing.strength=0.3"], [*MEMBERS[1], "model.share_penalty=0.002"]],
    ),
    "lowrank_full": (
        ["model=lowrank", "model.combining=full", "callbacks.filter_images.enabled=true"],
        [MEMBERS[0], [*MEMBERS[1], "model.fcn_init=keras"], MEMBERS[2]],
    ),
    "lowrank_factorized": (["model=lowrank", "model.combining=factorized", "model.rank=3"], MEMBERS[:2]),
    "lowrank_rank1_depth2": (["model=lowrank", "model.rank=1", "model.depth=2"], MEMBERS[:2]),
    # the spatial bias without the filter bias: the two switches are independent in a pack too
    "lowrank_spatial_bias_only": (["model=lowrank", "model.rank=2", "model.filter_bias=false"], MEMBERS[:2]),
    "lowrank_dynamic": (
        [
            "model=lowrank",
            "model.rank=2",
            "model.combining=full",
            "model.dynamic_sharing.every=3",
            "model.dynamic_sharing.radius=2",
        ],
        [[*MEMBERS[0], "model.dynamic_sharing.strength=0.4"], MEMBERS[1]],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_spectrum_pack_equals_single_runs(tmp_path, case):
    common, members = CASES[case]
    assert_pack_equals_single_runs(tmp_path, common, members)


def test_dynamic_sharing_pack_resumes_on_the_single_run_steps(tmp_path, monkeypatch):
    """Interrupted after epoch 0 and resumed, a pack shares at the same global steps as an uninterrupted one."""
    from weightshare.packed.member import MemberCallbacks

    members = [[*MEMBERS[0], "model.dynamic_sharing.strength=0.5"], MEMBERS[1]]
    common = [*DYN, "trainer.max_epochs=3"]
    train_pack([make_cfg(tmp_path / f"ref{i}", [*common, *m]) for i, m in enumerate(members)])
    end = MemberCallbacks.on_train_epoch_end

    def end_then_stop(self, trainer, pl_module):
        end(self, trainer, pl_module)  # every member's row and checkpoints of the epoch
        if trainer.current_epoch == 0:
            raise RuntimeError("killed")

    monkeypatch.setattr(MemberCallbacks, "on_train_epoch_end", end_then_stop)
    with pytest.raises(RuntimeError, match="killed"):
        train_pack([make_cfg(tmp_path / f"run{i}", [*common, *m]) for i, m in enumerate(members)])
    monkeypatch.setattr(MemberCallbacks, "on_train_epoch_end", end)
    train_pack([make_cfg(tmp_path / f"run{i}", [*common, *m, "resume=true"]) for i, m in enumerate(members)])
    for i in range(len(members)):
        rows = read_metrics_csv(tmp_path / f"run{i}" / "metrics.csv")
        assert [r["train/dynamic_sharing_steps"] for r in rows] == [2.0, 5.0, 8.0]  # global steps 8, 16, 24
        assert read_json(tmp_path / f"run{i}" / "results.json")["resumed"] == 1
        assert_same_runs(tmp_path / f"ref{i}", tmp_path / f"run{i}")  # exact: cast before the restore
