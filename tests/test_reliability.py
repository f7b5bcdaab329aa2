"""Faults a long sweep meets: killed runs, NaN losses, unsafe checkpoints, unwritable outputs."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from weightshare.checkpoints import load_checkpoint
from weightshare.errors import CheckpointError, ConfigError
from weightshare.results import read_metrics_csv
from weightshare.train import train

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "data=synthetic",
    "data.options.size=1024",
    "callbacks=minimal",
    "eval=clean",
    "threads=1",
    "trainer.deterministic=true",
    "test=false",
]


class _WritesMarker:
    """Unpickling this object would create a file: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _crafted_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.ckpt"
    with path.open("wb") as fh:
        pickle.dump({"state_dict": {}, "payload": _WritesMarker(marker)}, fh)
    return path, marker


def test_checkpoint_that_would_run_code_is_refused(tmp_path) -> None:
    path, marker = _crafted_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_cli_refuses_crafted_checkpoint_for_resume_and_init_from(tmp_path) -> None:
    path, marker = _crafted_checkpoint(tmp_path)
    for args in ([f"ckpt_path={path}"], ["model=fcn", f"model.init_from={path}"]):
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "train.py"),
                *SMALL,
                "trainer.max_epochs=1",
                *args,
                f"hydra.run.dir={tmp_path / 'run'}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "refusing to load checkpoint" in proc.stderr and "evil.ckpt" in proc.stderr
        assert not marker.exists()


def test_missing_checkpoint_is_a_clear_error(compose, tmp_path) -> None:
    cfg = compose([*SMALL, f"ckpt_path={tmp_path / 'nope.ckpt'}"], output_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"nope\.ckpt"):
        train(cfg)


def test_unwritable_output_dir_fails_at_start(compose, tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cfg = compose(SMALL, output_dir=blocker / "run")
    with pytest.raises(ConfigError, match=r"paths\.output_dir"):
        train(cfg)


def test_nan_loss_stops_the_run_as_diverged(compose, tmp_path, monkeypatch) -> None:
    import weightshare.module as module

    real = module.F.cross_entropy
    calls = {"n": 0}

    def poisoned(logits, target, *a, **k):
        loss = real(logits, target, *a, **k)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 20:  # the 20th training step: epoch 1, step 19 at 13 batches an epoch
                return loss * float("nan")
        return loss

    monkeypatch.setattr(module.F, "cross_entropy", poisoned)
    cfg = compose([*SMALL, "trainer.max_epochs=3"], output_dir=tmp_path)
    with pytest.raises(module.DivergenceError, match="epoch 1, step 19"):
        train(cfg)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "diverged"
    assert "loss=nan at epoch 1, step 19" in res["error"]


def _run_and_read(compose, out: Path, extra: list[str]) -> list[dict]:
    cfg = compose([*SMALL, "trainer.max_epochs=2", "model=fcn", *extra], output_dir=out)
    train(cfg)
    return read_metrics_csv(out / "metrics.csv")


def test_same_seed_is_bit_identical_and_other_seeds_or_folds_differ(compose, tmp_path) -> None:
    extra = ["aug.translate=0.2", "model.connectivity=0.3"]
    a = _run_and_read(compose, tmp_path / "a", extra)
    b = _run_and_read(compose, tmp_path / "b", extra)
    strip = [{k: v for k, v in r.items() if not k.startswith(("time/", "train/images_per_s"))} for r in a]
    assert strip == [{k: v for k, v in r.items() if not k.startswith(("time/", "train/images_per_s"))} for r in b]
    c = _run_and_read(compose, tmp_path / "c", [*extra, "seed=1"])
    d = _run_and_read(compose, tmp_path / "d", [*extra, "data.fold=1"])
    assert c[-1]["train/loss"] != a[-1]["train/loss"]
    assert d[-1]["train/loss"] != a[-1]["train/loss"]
    masks = {}
    for name in ("a", "c", "d"):
        state = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        masks[name] = next(v for k, v in state.items() if "mask" in k)
    assert torch.equal(masks["a"], load_mask(tmp_path / "b"))
    assert not torch.equal(masks["a"], masks["c"])


def load_mask(run: Path) -> torch.Tensor:
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return next(v for k, v in state.items() if "mask" in k)


def _train_cmd(out: Path, epochs: int) -> list[str]:
    return [
        sys.executable,
        str(REPO / "train.py"),
        *SMALL,
        "model=fcn",
        "aug.translate=0.1",
        "data.options.size=2048",
        f"trainer.max_epochs={epochs}",
        "callbacks.early_stopping.enabled=false",
        f"hydra.run.dir={out}",
    ]


def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path) -> None:
    epochs = 5
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_train_cmd(ref, epochs), check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(_train_cmd(killed, epochs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(read_metrics_csv(killed / "metrics.csv")) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(read_metrics_csv(killed / "metrics.csv"))
    assert 2 <= done_before < epochs, "the kill must land mid-run"
    assert json.loads((killed / "results.json").read_text())["status"] == "running"
    resumed = subprocess.run(
        [*_train_cmd(killed, epochs), "ckpt_path=last"], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = read_metrics_csv(killed / "metrics.csv")
    assert [r["epoch"] for r in rows] == list(range(epochs))
    res = json.loads((killed / "results.json").read_text())
    assert res["status"] == "completed" and res["epochs_completed"] == epochs
    ref_rows = read_metrics_csv(ref / "metrics.csv")
    for key in ("train/loss", "train/acc", "val/acc", "val/loss", "fd/conv1/r1/euclid", "val/acc_best"):
        assert [r[key] for r in rows] == [r[key] for r in ref_rows], key


def test_sigterm_marks_the_run_interrupted_exits_nonzero_and_resumes(tmp_path) -> None:
    out = tmp_path / "term"
    proc = subprocess.Popen(_train_cmd(out, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(read_metrics_csv(out / "metrics.csv")) < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # what SLURM sends at preemption or the time limit
    assert proc.wait(timeout=120) == 143
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "interrupted" and "SIGTERM" in res["error"]
    resumed = subprocess.run([*_train_cmd(out, 4), "resume=true"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["epoch"] for r in read_metrics_csv(out / "metrics.csv")] == [0, 1, 2, 3]
    assert json.loads((out / "results.json").read_text())["status"] == "completed"
