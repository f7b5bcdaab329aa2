"""Hydra launchers run for real: joblib processes in parallel, submitit's local executor."""

from __future__ import annotations

import json
import os
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


@pytest.mark.parametrize(
    ("launcher", "name"),
    [
        (["hydra/launcher=slurm"], "hydra/launcher=slurm"),
        (
            ["hydra/launcher=packed", "hydra.launcher.executor=slurm"],
            "hydra/launcher=packed hydra.launcher.executor=slurm",
        ),
    ],
)
def test_slurm_launchers_without_slurm_are_one_line_errors(tmp_path, launcher: list[str], name: str) -> None:
    """No sbatch/srun/scontrol on PATH (a laptop): one line naming the launcher and what to use instead."""
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", *launcher, *JOBS, f"hydra.sweep.dir={tmp_path}/s"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": str(empty)},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert lines == [
        f"error: {name} needs SLURM, and this machine has none (no sbatch/srun/scontrol); use "
        "hydra/launcher=local_submitit (or hydra.launcher.executor=submitit_local) to run the SLURM code path "
        "as local processes, or hydra/launcher=parallel"
    ]
    assert not (tmp_path / "s" / "0").exists()  # no job started
