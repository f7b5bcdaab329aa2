"""Both SLURM launchers against a real one-node SLURM cluster (``scripts/slurm/start.sh``).

``hydra/launcher=slurm`` and ``hydra/launcher=packed hydra.launcher.executor=slurm`` run
tiny synthetic sweeps while the tests do to them what a cluster does: a job that fails,
``scancel --signal=TERM`` (preemption), ``scontrol requeue``, the time-limit signal after
the last allowed requeue, a real time limit, ``scancel`` of a job outright. What is
checked is what a user sees: exit status, the sweep's table, ``results.json``,
``metrics.csv`` (never the engine's internals). Marker ``slurm``: skipped, with the reason,
when no cluster answers (``.ci/run`` starts one).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _cluster_problem() -> str | None:
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no SLURM cluster here ({exc}); start one with scripts/slurm/start.sh"
    if proc.returncode != 0 or not proc.stdout.strip():
        return f"SLURM does not answer (sinfo: {proc.stderr.strip()[:200]}); start it with scripts/slurm/start.sh"
    if not any(s.startswith(("idle", "mix", "alloc")) for s in proc.stdout.split()):
        return f"no SLURM node is up (sinfo: {proc.stdout.split()})"
    return None


_PROBLEM = _cluster_problem()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))]

#: the tiny synthetic job every sweep runs (one CPU, a few seconds an epoch on a loaded 2-core machine)
JOB = ["data=synthetic", "data.options.size=2048", "callbacks=minimal", "callbacks.early_stopping.enabled=false",
       "eval=clean", "test=false"]  # fmt: skip
#: submitit settings that fit the one-node test cluster (2 CPUs, no GPU)
LAUNCHERS = {
    "slurm": ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"],
    "packed": [
        "hydra/launcher=packed",
        "hydra.launcher.executor=slurm",
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
    ],
}
#: timeout_min=3 counts every time-limit signal (USR2) as a time-out (submitit: under 10 minutes)
TIMING = ["hydra.launcher.timeout_min=3", "hydra.launcher.signal_delay_s=30"]


def _command(launcher: str, sweep: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), "-m", *LAUNCHERS[launcher], *JOB, *overrides,
            f"hydra.sweep.dir={sweep}"]  # fmt: skip


def _start(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the sweep did not end in {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
    return proc.returncode, out, err


def _results(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / "results.json").read_text())


def _epochs(job_dir: Path) -> list[int]:
    with open(job_dir / "metrics.csv", newline="") as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


def _slurm_job_when(job_dir: Path, epochs: int, proc: subprocess.Popen[str], timeout: float = 180) -> str:
    """The SLURM job id of the run in ``job_dir`` once its metrics.csv holds ``epochs`` epochs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the sweep ended before the job got that far"
        try:
            res = _results(job_dir)
            if len(_epochs(job_dir)) >= epochs and res.get("status") == "running" and res.get("slurm"):
                return str(res["slurm"]["job_id"])
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    pytest.fail(f"{job_dir} did not reach {epochs} epoch(s) in {timeout} s")


def _state(job_id: str) -> tuple[str, str]:
    out = subprocess.run(["squeue", "--states=all", "-h", "-j", job_id, "-o", "%T|%r"], capture_output=True,
                         text=True).stdout.strip()  # fmt: skip
    state, _, reason = out.partition("|")
    return state, reason


def _requeue_now(job_id: str) -> None:
    """``scontrol requeue``; then lift the 2 minutes SLURM holds a requeued job back (BeginTime)."""
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    for _ in range(100):
        state, reason = _state(job_id)
        if state == "PENDING" and reason == "BeginTime":
            break
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def _wait_restart(job_dir: Path, restarts: int, proc: subprocess.Popen[str], timeout: float = 180) -> None:
    """Until the run in ``job_dir`` has started again ``restarts`` times (SLURM_RESTART_COUNT) and trains."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the sweep ended before the job came back"
        try:
            res = _results(job_dir)
            if res["status"] == "running" and (res.get("slurm") or {}).get("restart_count") == restarts:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    pytest.fail(f"{job_dir} did not start again in {timeout} s")


#: ``scancel``'s exit status when a step it signals has ended meanwhile (ESLURM_ALREADY_DONE 2021 % 256):
#: the job caught the signal and finished before scancel reached its other steps
SCANCEL_ALREADY_DONE = 229


def _signal(job_id: str, signal: str) -> None:
    """Send ``signal`` to every step of ``job_id`` (what preemption and a time limit do)."""
    proc = subprocess.run(["scancel", f"--signal={signal}", job_id], capture_output=True, text=True)
    assert proc.returncode in (0, SCANCEL_ALREADY_DONE), proc.stderr


def _assert_sweep_end(code: int, out: str, err: str, expected: int) -> None:
    """The sweep ended as a sweep: its table, no traceback, the exit status."""
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    assert "sweep " in out and "status" in out, out[-2000:]  # the table
    assert code == expected, err[-3000:]


def test_settings_the_cluster_cannot_satisfy_stop_before_submission(tmp_path: Path) -> None:
    """The defaults (1 GPU, 8 CPUs, 32 GB) on a 2-CPU node without GPUs, an unknown partition, a too short
    time limit: one line each, exit status 2, nothing submitted."""

    def run(*overrides: str) -> list[str]:
        proc = subprocess.run(
            [sys.executable, str(REPO / "train.py"), "-m", *overrides, *JOB, f"hydra.sweep.dir={tmp_path}/s"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert not (tmp_path / "s" / ".submitit").exists()
        return [ln.split(":")[1].strip() for ln in proc.stderr.splitlines() if ln.startswith("error:")]

    # keys named: gpus_per_node=1, cpus_per_task=8, mem_gb=32 (the node has 2 CPUs and no GPU)
    assert run("hydra/launcher=slurm") == [
        "hydra.launcher.gpus_per_node=1", "hydra.launcher.cpus_per_task=8", "hydra.launcher.mem_gb=32"
    ]  # fmt: skip
    assert run(*LAUNCHERS["packed"], "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=2") == [
        "hydra.launcher.timeout_min=2", "hydra.launcher.partition=gpu"
    ]  # fmt: skip


def test_grid_failure_and_preemption_then_resume(tmp_path: Path) -> None:
    """A grid where one job completes, one is preempted and two fail; resume=true finishes the preempted one.

    Jobs: #0 (1 epoch) completes; #1 (6 epochs) gets SIGTERM after its first epoch; #2 and #3
    name a checkpoint file that does not exist (a bad value would be refused before submission;
    a missing file is each job's own start check), so they fail: the sweep ends with its table
    and exit status 1. Both launchers at once, side by side.
    """
    names = ("slurm", "packed")
    missing = tmp_path / "missing.ckpt"
    grid = [f"ckpt_path=null,{missing}", "trainer.max_epochs=1,6", *TIMING]
    procs = {name: _start(_command(name, tmp_path / name, *grid)) for name in names}
    for name in names:
        _signal(_slurm_job_when(tmp_path / name / "1", 1, procs[name]), "TERM")
    for name in names:
        sweep = tmp_path / name
        code, out, err = _finish(procs[name])
        _assert_sweep_end(code, out, err, expected=1)
        status = {k: _results(sweep / str(k))["status"] for k in range(4)}
        assert status == {0: "completed", 1: "interrupted", 2: "failed", 3: "failed"}, name
        assert _results(sweep / "1")["error"] == "SIGTERMException: terminated (SIGTERM)"
        assert "3 of 4 jobs did not complete (2 failed, 1 interrupted)" in err
        assert "missing.ckpt" in out  # the failed jobs' error is listed under the table
        first = _results(sweep / "0")["slurm"]
        assert first["job_id"] and Path(first["log"]).is_file() and first["restart_count"] == 0
        if name == "slurm":  # one array element per job
            assert [_results(sweep / str(k))["slurm"]["array_index"] for k in range(4)] == [0, 1, 2, 3]
        assert 1 <= len(_epochs(sweep / "1")) < 6

    procs = {name: _start(_command(name, tmp_path / name, *grid, "resume=true")) for name in names}
    for name in names:
        sweep = tmp_path / name
        code, out, err = _finish(procs[name])
        _assert_sweep_end(code, out, err, expected=1)  # #2 and #3 still fail: their checkpoint is still missing
        res = _results(sweep / "1")
        assert res["status"] == "completed" and res["resumed"] == 1, name
        assert _epochs(sweep / "1") == list(range(6))  # each epoch once
        # a start check that fails where a record exists keeps that record and marks it refused
        assert "2 of 4 jobs did not complete (2 refused)" in err


def test_requeue_resumes_by_itself_until_the_last_allowed_requeue(tmp_path: Path) -> None:
    """``scontrol requeue`` resumes from last.ckpt by itself; the time-limit signal after the last allowed
    requeue (max_num_timeout=0) leaves the job ``interrupted``; resume=true finishes it.

    Both launchers at once (one 1-CPU job each on the 2-CPU node), step by step side by side.
    """
    epochs_wanted = 8
    cmd = [*TIMING, f"trainer.max_epochs={epochs_wanted}", "hydra.launcher.max_num_timeout=0"]
    names = ("slurm", "packed")
    procs = {name: _start(_command(name, tmp_path / name, *cmd)) for name in names}
    jobs = {name: tmp_path / name / "0" for name in names}
    ids = {name: _slurm_job_when(jobs[name], 1, procs[name]) for name in names}
    for name in names:
        _requeue_now(ids[name])
    for name in names:
        _wait_restart(jobs[name], 1, procs[name])  # submitit has set its signal handler before results.json
        assert _results(jobs[name])["resumed"] == 1
        _signal(ids[name], "USR2")  # what SLURM sends signal_delay_s before a limit
    for name in names:
        code, out, err = _finish(procs[name])
        _assert_sweep_end(code, out, err, expected=1)
        res = _results(jobs[name])
        assert res["status"] == "interrupted" and "timed-out too many times" in res["error"], name
        assert res["slurm"]["restart_count"] == 1
        epochs = _epochs(jobs[name])
        assert epochs == list(range(len(epochs))) and 1 <= len(epochs) < epochs_wanted  # resumed, not from 0

    procs = {name: _start(_command(name, tmp_path / name, *cmd, "resume=true")) for name in names}
    for name in names:
        code, out, err = _finish(procs[name])
        _assert_sweep_end(code, out, err, expected=0)
        res = _results(jobs[name])
        assert res["status"] == "completed" and res["resumed"] == 2, name
        assert _epochs(jobs[name]) == list(range(epochs_wanted))
        # the wall time counts every start: more than this last start alone
        assert res["wall_time_s"] > res["finished_unix"] - res["started_unix"] + 1.0


def test_real_time_limit_and_a_cancelled_job(tmp_path: Path) -> None:
    """A real SLURM time limit (timeout_min=2) on both launchers at once, and a job killed without a word.

    The time limit's signal comes signal_delay_s before the limit; with max_num_timeout=0 the
    job is ``interrupted`` and the sweep ends with its table and exit status 1. A job whose
    process is SIGKILLed writes no result: the launcher records it ``failed`` with SLURM's state.
    """
    limit = ["hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=20", "hydra.launcher.max_num_timeout=0"]
    slow = ["trainer.max_epochs=100000"]  # longer than the limit on any machine
    procs = {name: _start(_command(name, tmp_path / name, *limit, *slow)) for name in ("slurm", "packed")}
    for name, proc in procs.items():
        code, out, err = _finish(proc, timeout=300)
        _assert_sweep_end(code, out, err, expected=1)
        res = _results(tmp_path / name / "0")
        log = Path(res.get("slurm", {}).get("log") or "/nonexistent")
        assert res["status"] == "interrupted", (res, log.read_text()[-3000:] if log.is_file() else "no log")
        assert "timed-out too many times" in res["error"]
        assert (tmp_path / name / "0" / "checkpoints" / "last.ckpt").is_file()

    sweep = tmp_path / "killed"
    proc = _start(_command("slurm", sweep, *TIMING, "trainer.max_epochs=50"))
    _slurm_job_when(sweep / "0", 1, proc)
    os.kill(_results(sweep / "0")["pid"], signal.SIGKILL)  # as the out-of-memory killer would: no word
    code, out, err = _finish(proc)
    _assert_sweep_end(code, out, err, expected=1)
    res = _results(sweep / "0")
    assert res["status"] == "failed", res
    assert "without a result" in res["error"] and res["slurm"]["state"] == "FAILED"
