"""The command line end to end: `python train.py ...` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAST = [
    "data=synthetic",
    "data.options.size=512",
    "trainer.max_epochs=2",
    "callbacks=minimal",
    "eval.variants=[clean,translate,quadrant_swap]",
    "threads=1",
]


def run_train(args: list[str], cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_train_on_synthetic_writes_results_json(tmp_path) -> None:
    out = tmp_path / "run"
    proc = run_train([*FAST, "model=fcn", f"hydra.run.dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "completed"
    assert res["epochs_completed"] == 2
    assert res["identity"]["model"] == "fcn" and res["identity"]["data"] == "synthetic"
    assert res["param_count"] == 4_010_058  # the MNIST geometry on 28x28 synthetic images
    for section in ("final", "best"):
        for key in ("train/acc", "val/acc", "val/translate/acc", "val/quadrant_swap/acc", "val/acc_best"):
            assert 0.0 <= res[section][key] <= 1.0, (section, key)
    assert set(res["test"]) >= {"clean/acc", "translate/acc", "quadrant_swap/acc"}
    assert res["final"]["val/acc"] == pytest.approx(res["test"]["clean/acc"])  # same weights, same data
    assert "fd/conv1/r1/euclid" in res["init"] and "fd/conv1/r1/euclid" in res["final"]
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,step,") and len(lines) == 3
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "config.yaml").is_file() and (out / ".hydra" / "config.yaml").is_file()


def test_help_and_cfg_job_show_the_composed_config() -> None:
    proc = run_train(["--cfg", "job", "model=fcn", "aug.translate=0.2"])
    assert proc.returncode == 0, proc.stderr
    assert "name: fcn" in proc.stdout and "translate: 0.2" in proc.stdout
    proc = run_train(["--help"])
    assert proc.returncode == 0, proc.stderr
    assert "model: cnn, fcn, lowrank, resnet, sharesnet" in proc.stdout
    assert "experiment: divergence, paper_edge_noise" in proc.stdout and "weightshare-report" in proc.stdout


def test_config_error_is_one_line_with_exit_status_2(tmp_path) -> None:
    proc = run_train([*FAST, "aug.translate=1.5", f"hydra.run.dir={tmp_path / 'bad'}"])
    assert proc.returncode == 2
    assert "error: config error: aug.translate=1.5 is not allowed; expected a number in [0, 1)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "bad" / "results.json").exists()  # nothing started


def test_multirun_records_a_failing_job_and_runs_the_others(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    # a value out of range is refused before the sweep starts (test_config_errors); a file that
    # is missing is found by the job itself
    missing = tmp_path / "no_such.ckpt"
    args = ["-m", *FAST, "trainer.max_epochs=1", f"ckpt_path=null,{missing}", f"hydra.sweep.dir={sweep}"]
    proc = run_train(args)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the sweep went on, and says a job failed
    good = json.loads((sweep / "0" / "results.json").read_text())
    bad = json.loads((sweep / "1" / "results.json").read_text())
    assert good["status"] == "completed"
    assert bad["status"] == "failed" and "no_such.ckpt" in bad["error"]
    assert "failed" in proc.stdout  # the end-of-sweep summary table lists it


def test_multirun_with_wandb_offline_gives_each_job_its_own_grouped_run(tmp_path) -> None:
    sweep = tmp_path / "wb"
    env_extra = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}
    env = {**os.environ, **env_extra, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "-m",
            *FAST,
            "trainer.max_epochs=1",
            "logger=wandb",
            "logger.wandb.offline=true",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [sorted((sweep / str(i)).rglob("offline-run-*")) for i in range(2)]
    assert all(len(r) == 1 for r in runs), runs  # one run per job, none lost
    ids = {r[0].name.rsplit("-", 1)[-1] for r in runs}
    assert len(ids) == 2
    for r in runs:  # each run finished and its config logged (the offline .wandb file is complete)
        assert list(r[0].glob("run-*.wandb")), list(r[0].iterdir())


def test_fcn_trains_under_bf16_autocast_on_cpu_as_well_as_in_fp32(tmp_path) -> None:
    """bf16 autocast against the fp32 run of the same seed: the same accuracy within a few points.

    Measured (1024 synthetic images, 3 epochs, seed 0): fp32 val/acc 0.600, bf16 0.595; chance
    is 0.1. An FCN that outputs zeros (or noise) under autocast scores about 0.1 and fails.
    """
    args = [*FAST, "data.options.size=1024", "model=fcn", "trainer.max_epochs=3", "eval=clean"]
    res = {}
    for precision in ("32-true", "bf16-mixed"):
        out = tmp_path / precision
        proc = run_train([*args, f"trainer.precision={precision}", f"hydra.run.dir={out}"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        res[precision] = json.loads((out / "results.json").read_text())
        assert res[precision]["status"] == "completed"
        assert res[precision]["config"]["trainer"]["precision"] == precision
    fp32, bf16 = res["32-true"]["final"], res["bf16-mixed"]["final"]
    assert fp32["val/acc"] > 0.45, fp32  # far above chance (0.1): the reference itself learned
    assert bf16["val/acc"] > 0.45, bf16
    assert abs(bf16["val/acc"] - fp32["val/acc"]) < 0.05, (bf16["val/acc"], fp32["val/acc"])
    assert abs(bf16["train/loss"] - fp32["train/loss"]) < 0.1, (bf16["train/loss"], fp32["train/loss"])
    assert res["bf16-mixed"]["test"]["clean/acc"] == pytest.approx(bf16["val/acc"])


def _write_cifar_batches(root: Path, per_batch: int = 40) -> None:
    """Tiny CIFAR-10 in the python pickle format (5 train batches + test batch + meta)."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"batch_label": name.encode(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=4))


def test_cifar10_fcn_depth2_from_written_files(tmp_path) -> None:
    _write_cifar_batches(tmp_path / "data")
    out = tmp_path / "cifar"
    proc = run_train(
        [
            "data=cifar10",
            f"data.root={tmp_path / 'data'}",
            "data.verify_checksums=false",
            "data.download=false",
            "data.batch_size=32",
            "model=fcn",
            "model.depth=2",
            "trainer.max_epochs=1",
            "callbacks=minimal",
            "eval.variants=[clean,quadrant_swap]",
            "threads=1",
            f"hydra.run.dir={out}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "completed"
    assert res["param_count"] == 9_364_618  # CIFAR-10 FCN at depth 2 (Table A.2 without layer 3)
    assert res["data_info"] == {"name": "cifar10", "in_channels": 3, "height": 32, "width": 32, "num_classes": 10}
    assert res["identity"]["split"] == "kfold" and res["epochs_completed"] == 1
