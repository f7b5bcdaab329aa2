"""Hydra launchers run for real: joblib processes in parallel, submitit's local executor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JOBS = [
    "data=synthetic",
    "data.options.size=1024",
    "trainer.max_epochs=2",
    "callbacks=minimal",
    "eval=clean",
    "threads=1",
    "test=false",
    "seed=0,1",
]


def _sweep(tmp_path: Path, launcher: str) -> list[dict]:
    sweep = tmp_path / launcher
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", f"hydra/launcher={launcher}", *JOBS, f"hydra.sweep.dir={sweep}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((sweep / str(i) / "results.json").read_text()) for i in range(2)]


def test_joblib_runs_two_jobs_in_parallel_processes(tmp_path) -> None:
    a, b = _sweep(tmp_path, "parallel")
    assert a["status"] == b["status"] == "completed"
    assert a["pid"] != b["pid"]
    # each started before the other finished: they overlapped in time
    assert a["started_unix"] < b["finished_unix"] and b["started_unix"] < a["finished_unix"]
    assert {a["seed"], b["seed"]} == {0, 1}


@pytest.mark.timeout(600)
def test_submitit_local_executor_runs_the_sweep(tmp_path) -> None:
    a, b = _sweep(tmp_path, "local_submitit")
    assert a["status"] == b["status"] == "completed"
    assert a["pid"] != b["pid"]
    assert (tmp_path / "local_submitit" / ".submitit").is_dir()


def test_slurm_launcher_without_slurm_is_one_line_error(tmp_path) -> None:
    from weightshare.hydra_preflight import slurm_available

    if slurm_available():
        pytest.skip("this machine has SLURM")
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=slurm", *JOBS, f"hydra.sweep.dir={tmp_path}/s"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert lines == [
        "error: hydra/launcher=slurm needs SLURM, and this machine has none (no srun); use "
        "hydra/launcher=local_submitit to run the SLURM code path as local processes, or hydra/launcher=parallel"
    ]
    assert not (tmp_path / "s" / "0").exists()  # no job started
