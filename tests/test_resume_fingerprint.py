"""A resume refuses a different run (issue #18, item 5).

Every checkpoint and every ``results.json`` carries the fingerprint of the config that
defines the run (``weightshare.fingerprint``); resuming with another one is a one-line error
naming the keys that differ, exit status 2, and nothing is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from tiny_runs import TINY_RUN
from weightshare.checkpoints import load_checkpoint
from weightshare.errors import RunMismatchError
from weightshare.fingerprint import CHECKPOINT_KEY, LIMIT_KEYS, run_fingerprint
from weightshare.results import read_metrics_csv
from weightshare.train import train

REPO = Path(__file__).resolve().parents[1]
TINY = [*TINY_RUN, "callbacks.early_stopping.enabled=false"]


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _task_exit(compose, args: list[str], out: Path, capsys) -> tuple[int, list[str]]:
    """Run the Hydra task in-process as a single run: (exit status, stderr lines)."""
    from weightshare.train import task

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        task(compose([*TINY, *args], output_dir=out))
    return int(info.value.code), capsys.readouterr().err.strip().splitlines()


def _multirun(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", *TINY, *args], capture_output=True, text=True, timeout=300
    )


def test_fingerprint_ignores_outputs_and_raisable_limits_but_not_what_is_trained(compose, tmp_path) -> None:
    cfg = compose(TINY, output_dir=tmp_path / "a")
    base = run_fingerprint(cfg)

    def changed(key: str, value: object, start: DictConfig = cfg) -> dict:
        other = start.copy()
        OmegaConf.update(other, key, value, merge=False)
        return run_fingerprint(other)

    same = {
        "trainer.max_epochs": 7,
        "data.patience": 3,
        "callbacks.early_stopping.patience": 3,
        "paths.output_dir": str(tmp_path / "b"),
        "logger.names": ["csv", "tensorboard"],
        "tags": ["x"],
        "threads": 2,
        "test": True,
        "resume": True,
        "callbacks.progress_bar": "tqdm",
    }
    for key, value in same.items():
        assert changed(key, value) == base, key
    defining = {"optimizer.lr": 1e-4, "aug.translate": 0.2, "seed": 1, "data.fold": 1, "model.name": "fcn",
                "trainer.precision": "bf16-mixed", "data.batch_size": 32}  # fmt: skip
    for key, value in defining.items():
        assert changed(key, value) != base, key
    # with a cosine schedule the epoch limit shapes every epoch's learning rate: it defines the run
    cosine = compose([*TINY, "scheduler=cosine"], output_dir=tmp_path / "a")
    assert changed("trainer.max_epochs", 7, cosine) != run_fingerprint(cosine)
    assert "trainer.max_epochs" in LIMIT_KEYS and "trainer.max_epochs" not in base


@pytest.fixture()
def after_epoch_1(compose, tmp_path) -> Path:
    """A run directory holding epochs 0 and 1 (last.ckpt of epoch 1), as a kill after epoch 1 leaves it."""
    out = tmp_path / "run"
    train(compose([*TINY, "trainer.max_epochs=2"], output_dir=out))
    return out


def test_resume_with_changed_lr_and_translate_is_refused_naming_both_keys(compose, after_epoch_1, capsys) -> None:
    """The issue's case: ckpt_path=last optimizer.lr=1e-4 aug.translate=0.2 after epoch 1.

    Before: exit 0, results.json said lr 1e-4 / translate 0.2 while metrics.csv's lr column
    said 1e-3 for every epoch.
    """
    run = after_epoch_1
    before = _snapshot(run)
    args = ["trainer.max_epochs=4", "ckpt_path=last", "optimizer.lr=1e-4", "aug.translate=0.2"]
    status, lines = _task_exit(compose, args, run, capsys)
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("error: resume refused:"), lines
    assert "aug.translate: 0.0 -> 0.2" in lines[0] and "optimizer.lr: 0.001 -> 0.0001" in lines[0]
    assert "2 keys differ" in lines[0]
    assert _snapshot(run) == before  # results.json, metrics.csv, checkpoints: byte for byte


def test_the_checkpoint_itself_refuses_another_run(compose, after_epoch_1) -> None:
    """Without the results.json record (or with ckpt_path=<file>), the checkpoint's fingerprint decides."""
    run = after_epoch_1
    last = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)[CHECKPOINT_KEY]["optimizer.lr"] == pytest.approx(1e-3)
    (run / "results.json").unlink()
    cfg = compose([*TINY, "trainer.max_epochs=4", f"ckpt_path={last}", "optimizer.lr=1e-4"], output_dir=run)
    with pytest.raises(RunMismatchError, match=r"checkpoint .*last\.ckpt .*optimizer\.lr: 0\.001 -> 0\.0001"):
        train(cfg)
    assert not (run / "results.json").exists()


def test_raising_the_epoch_limit_resumes_the_same_run(compose, after_epoch_1) -> None:
    run = after_epoch_1
    train(compose([*TINY, "trainer.max_epochs=4", "ckpt_path=last"], output_dir=run))
    rows = read_metrics_csv(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert [r["lr"] for r in rows] == [pytest.approx(1e-3)] * 4
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "completed" and res["resumed"] == 1 and res["identity"]["lr"] == pytest.approx(1e-3)


def test_resume_true_with_changed_config_on_a_completed_directory_is_refused(compose, after_epoch_1, capsys) -> None:
    """The issue's case: resume=true aug.edge_noise=0.1 rewrote a completed run's record as edge_noise."""
    run = after_epoch_1
    record = (run / "results.json").read_bytes()
    status, lines = _task_exit(compose, ["trainer.max_epochs=2", "resume=true", "aug.edge_noise=0.1"], run, capsys)
    assert status == 2
    assert len(lines) == 1 and "resume refused" in lines[0] and "aug.edge_noise: 0.0 -> 0.1" in lines[0]
    assert (run / "results.json").read_bytes() == record
    assert json.loads(record)["identity"]["aug_type"] == "none"


def test_a_sweep_rerun_with_another_config_marks_the_job_refused_and_keeps_its_record(compose, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    train(compose([*TINY, "trainer.max_epochs=1"], output_dir=sweep / "0"))
    proc = _multirun(["trainer.max_epochs=1", "resume=true", "aug.translate=0.1", f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "refused" in proc.stdout and "aug.translate: 0.0 -> 0.1" in proc.stdout
    assert "1 of 1 jobs did not complete (1 refused)" in proc.stderr
    res = json.loads((sweep / "0" / "results.json").read_text())
    assert res["status"] == "completed" and res["identity"]["aug_type"] == "none"  # still its own run
    assert "aug.translate" in res["refused"]
