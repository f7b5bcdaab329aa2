"""The packed trainer on CUDA (skipped without a GPU; run by scripts/gpu_check.sh)."""

from __future__ import annotations

import pytest
import torch

from packed_helpers import assert_same_runs, make_cfg, run_single
from weightshare.packed import train_pack
from weightshare.results import read_json

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

MEMBERS = [["data.fold=0", "aug.translate=0.2"], ["data.fold=1", "seed=1", "optimizer.lr=0.003", "aug.noise=0.1"]]


MODELS = [["model=cnn"], ["model=fcn", "model.connectivity=0.3"], ["model=fcn", "model.share_tile=2"]]


@pytest.mark.parametrize("model", MODELS)
def test_cuda_pack_equals_cuda_single_runs_in_float64(tmp_path, model):
    common = [*model, "trainer.accelerator=gpu"]
    for i, m in enumerate(MEMBERS):
        run_single(make_cfg(tmp_path / f"single{i}", [*common, *m]))
    train_pack([make_cfg(tmp_path / f"pack{i}", [*common, *m]) for i, m in enumerate(MEMBERS)])
    for i in range(len(MEMBERS)):
        assert_same_runs(tmp_path / f"single{i}", tmp_path / f"pack{i}", tol=1e-9)


def test_cuda_bf16_pack_trains(tmp_path):
    common = ["model=fcn", "trainer.accelerator=gpu", "trainer.precision=bf16-mixed", "trainer.max_epochs=3"]
    values = train_pack([make_cfg(tmp_path / f"m{i}", [*common, *m]) for i, m in enumerate(MEMBERS)])
    assert all(v is not None for v in values)
    for i in range(len(MEMBERS)):
        assert read_json(tmp_path / f"m{i}" / "results.json")["status"] == "completed"
