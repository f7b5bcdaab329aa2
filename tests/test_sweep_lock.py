"""One sweep per directory, and read-only output directories (issue #18, items 6 and 7).

Before: two sweeps into one ``hydra.sweep.dir`` both ran every job with no warning, and a
read-only run or sweep directory ended in a Hydra ``OSError`` traceback with exit status 1.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_runs import TINY_RUN
from weightshare.sweep_lock import LOCK_NAME, SweepDirError, SweepLock, _pid_start

REPO = Path(__file__).resolve().parents[1]
TINY = [*TINY_RUN, "trainer.max_epochs=1"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(sweep: Path, **holder: object) -> Path:
    sweep.mkdir(parents=True, exist_ok=True)
    path = sweep / LOCK_NAME
    path.write_text(json.dumps({"host": socket.gethostname(), "started_at": "2026-01-02T03:04:05+0000", **holder}))
    return path


def test_a_live_holder_is_refused_by_name_and_release_removes_only_ones_own_lock(tmp_path) -> None:
    first = SweepLock(tmp_path)
    first.acquire()
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert (holder["host"], holder["pid"], holder["pid_start"]) == (
        socket.gethostname(),
        os.getpid(),
        _pid_start(os.getpid()),
    )
    with pytest.raises(SweepDirError) as info:
        SweepLock(tmp_path).acquire()
    message = str(info.value)
    assert "in use by a running sweep" in message and "\n" not in message
    assert f"host {socket.gethostname()}, pid {os.getpid()}, started {holder['started_at']}" in message
    stranger = SweepLock(tmp_path)
    stranger.release()  # holds nothing: must not remove the holder's lock
    assert (tmp_path / LOCK_NAME).is_file()
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_dead_holder_on_this_host_is_taken_over_with_a_log_line(tmp_path, caplog) -> None:
    dead = _dead_pid()
    _write_lock(tmp_path, pid=dead)
    lock = SweepLock(tmp_path)
    with caplog.at_level(logging.WARNING, logger="weightshare"):
        lock.acquire()
    assert f"taking over the stale sweep lock {tmp_path / LOCK_NAME}" in caplog.text and f"pid {dead}" in caplog.text
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]  # no stale copies left
    lock.release()


def test_a_reused_pid_is_not_mistaken_for_the_holder(tmp_path) -> None:
    """The holder's pid now belongs to another process (another start time): the lock is stale."""
    _write_lock(tmp_path, pid=os.getpid(), pid_start="1")
    lock = SweepLock(tmp_path)
    lock.acquire()
    lock.release()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path) -> None:
    """On a shared filesystem another host's pid cannot be checked: the lock counts as live."""
    path = _write_lock(tmp_path, host="node-b.cluster", pid=_dead_pid())
    with pytest.raises(
        SweepDirError, match=r"locked by a sweep on another host \(host node-b\.cluster, pid \d+"
    ) as info:
        SweepLock(tmp_path).acquire()
    assert f"delete {path} once that sweep is gone" in str(info.value)
    assert path.is_file()


def _sweep(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", *TINY, *args], capture_output=True, text=True, timeout=300
    )


LAUNCHERS = {
    "basic": [],
    "parallel": ["hydra/launcher=parallel"],
    "submitit": ["hydra/launcher=local_submitit"],
    "packed": ["hydra/launcher=packed"],
    "optuna": ["hparams_search=tpe", "hydra.sweeper.n_trials=1"],
}


@pytest.mark.parametrize(
    "launcher",
    [pytest.param(name, marks=[] if name == "basic" else [pytest.mark.slow]) for name in LAUNCHERS],
)
def test_a_second_sweep_into_a_held_directory_stops_naming_the_holder(tmp_path, launcher) -> None:
    """The holder is this test's process (alive, on this host); every launcher and sweeper stops before any job."""
    sweep = tmp_path / "sweep"
    _write_lock(sweep, pid=os.getpid(), pid_start=_pid_start(os.getpid()))
    proc = _sweep(["seed=0,1", *LAUNCHERS[launcher], f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == (
        f"error: hydra.sweep.dir={sweep} is in use by a running sweep (host {socket.gethostname()}, "
        f"pid {os.getpid()}, started 2026-01-02T03:04:05+0000); wait for it to end, or use another hydra.sweep.dir"
    )
    assert sorted(p.name for p in sweep.iterdir()) == [LOCK_NAME]  # no job ran, nothing written


def test_a_sweep_takes_over_a_stale_lock_and_releases_it_even_when_a_job_fails(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    dead = _dead_pid()
    _write_lock(sweep, pid=dead)
    # job 1 fails its start check (a missing checkpoint: a bad value would be refused before the sweep)
    proc = _sweep([f"ckpt_path=null,{tmp_path / 'missing.ckpt'}", f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 1, proc.stderr[-3000:]  # job 1 failed: the summary's exit status
    assert "taking over the stale sweep lock" in proc.stdout + proc.stderr and f"pid {dead}" in proc.stdout
    assert json.loads((sweep / "0" / "results.json").read_text())["status"] == "completed"
    assert not (sweep / LOCK_NAME).exists()


def test_read_only_run_directory_is_one_line_exit_2_before_anything_starts(read_only_dir) -> None:
    run = read_only_dir / "run"
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *TINY, f"hydra.run.dir={run}"], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    # the config's own check of paths.output_dir (hydra.run.dir) answers before Hydra creates anything
    assert len(lines) == 1 and lines[0].startswith(f"error: config error: paths.output_dir='{run}' is not allowed")
    assert "expected a writable directory" in lines[0]
    assert "Traceback" not in proc.stderr and list(read_only_dir.iterdir()) == []


def test_read_only_sweep_directory_is_one_line_exit_2_before_anything_starts(read_only_dir) -> None:
    proc = _sweep(["seed=0,1", f"hydra.sweep.dir={read_only_dir}"])
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: hydra.sweep.dir={read_only_dir} is not a writable directory"
    )
    assert list(read_only_dir.iterdir()) == []
