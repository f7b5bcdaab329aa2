"""Unsharing a trained CNN (the weight-divergence experiment)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from weightshare.builders import build_model
from weightshare.data.dataset import DataInfo
from weightshare.errors import ConfigError
from weightshare.layers import FreeConv2d
from weightshare.models.paper_nets import PaperNet

REPO = Path(__file__).resolve().parents[1]


def _model_cfg(**kw):
    base = {
        "name": "fcn",
        "depth": 3,
        "hidden": 64,
        "connectivity": 0.0,
        "connectivity_mode": "weight",
        "fcn_init": "conv",
        "impl": "auto",
        "share_tile": None,
        "share_penalty": 0.0,
        "penalty_radius": 1,
        "init_from": None,
        "compile": False,
        "arch": "paper",
        "widen_factor": 1,
    }
    base.update(kw)
    return OmegaConf.create(base)


@pytest.mark.parametrize("data", [DataInfo("mnist", 1, 28, 28, 10), DataInfo("cifar10", 3, 32, 32, 10)])
def test_fcn_from_cnn_checkpoint_predicts_identically_before_the_first_step(tmp_path, data) -> None:
    torch.manual_seed(0)
    cnn = PaperNet(data, "cnn", 3, 64)
    with torch.no_grad():  # non-zero biases, so copying them is tested too
        for name in cnn.conv_names:
            getattr(cnn, name).bias.normal_(0, 0.1)
    ckpt = tmp_path / "cnn.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in cnn.state_dict().items()}}, ckpt)
    fcn = build_model(_model_cfg(init_from=str(ckpt)), data)
    assert all(isinstance(getattr(fcn, n), FreeConv2d) for n in fcn.conv_names)
    x = torch.rand(16, data.in_channels, data.height, data.width)
    torch.testing.assert_close(fcn(x), cnn(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(fcn(x).argmax(1), cnn(x).argmax(1))
    for name in cnn.conv_names:  # each free layer remembers the filter it was unshared from
        torch.testing.assert_close(getattr(fcn, name).reference_kernel, getattr(cnn, name).weight)
    assert sum(p.numel() for p in fcn.parameters()) > sum(p.numel() for p in cnn.parameters())


def test_init_from_needs_the_same_depth(tmp_path) -> None:
    data = DataInfo("mnist", 1, 28, 28, 10)
    cnn = PaperNet(data, "cnn", 2, 64)
    ckpt = tmp_path / "cnn2.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in cnn.state_dict().items()}}, ckpt)
    with pytest.raises(ConfigError, match=r"model\.depth"):
        build_model(_model_cfg(init_from=str(ckpt), depth=3), data)


def test_divergence_experiment_runs_both_stages_in_one_command(tmp_path) -> None:
    out = tmp_path / "div"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "experiment=divergence",
            "data=synthetic",
            "data.options.size=512",
            "divergence.cnn_epochs=2",
            "trainer.max_epochs=2",
            "eval=clean",
            "callbacks.filter_images.enabled=false",
            "callbacks.progress_bar=none",
            "threads=1",
            f"hydra.run.dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cnn = json.loads((out / "cnn_stage" / "results.json").read_text())
    fcn = json.loads((out / "results.json").read_text())
    assert cnn["status"] == fcn["status"] == "completed"
    assert cnn["identity"]["model"] == "cnn" and cnn["epochs_completed"] == 2
    assert fcn["identity"]["init_from"] == "cnn_stage"
    assert fcn["stages"]["init_from"].endswith("cnn_stage/checkpoints/last.ckpt")
    # at the start every position holds the shared filter: distances are exactly zero ...
    for key in ("fd/conv1/r1/euclid", "fd/conv1/r1/cosine", "fd/conv1/to_ref/euclid", "fd/conv1/to_mean/euclid"):
        assert fcn["init"][key] == pytest.approx(0.0, abs=1e-6), key
    # ... and training frees them: the filters move apart and away from the shared one
    assert fcn["final"]["fd/conv1/r1/euclid"] > 1e-4
    assert fcn["final"]["fd/conv1/to_ref/euclid"] > 1e-4


def test_completed_divergence_run_is_skipped_when_rerun(tmp_path) -> None:
    out = tmp_path / "div"
    args = [
        sys.executable,
        str(REPO / "train.py"),
        "experiment=divergence",
        "data=synthetic",
        "data.options.size=256",
        "divergence.cnn_epochs=1",
        "trainer.max_epochs=1",
        "eval=clean",
        "callbacks.filter_images.enabled=false",
        "callbacks.progress_bar=none",
        "threads=1",
        "test=false",
        f"hydra.run.dir={out}",
    ]
    assert subprocess.run(args, capture_output=True, timeout=600).returncode == 0
    first = json.loads((out / "results.json").read_text())
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already completed" in again.stdout + again.stderr
    assert json.loads((out / "results.json").read_text())["finished_unix"] == first["finished_unix"]
