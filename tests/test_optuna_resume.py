"""Real faults injected into a real search (``python train.py hparams_search=tpe``), then the rerun.

Each test starts the search as a subprocess with tiny settings, kills it mid-trial (SIGKILL, or
SIGTERM as a scheduler sends it), and reruns the very same command, without
``hydra.sweep.dir``: the study lives in a directory derived from the command
(``outputs/<task>/search/<study name>/``), so the rerun must find it, finish it, record the
killed trial ``interrupted``, never train a finished trial again, and exit 0. ``WEIGHTSHARE_ROOT``
puts ``outputs/`` under the test's temporary directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from weightshare.job import RETRIED_AS
from weightshare.results import read_json, read_metrics_csv
from weightshare.trial_protocol import ATTR_INTERRUPTED, ATTR_RETRY_OF, open_storage

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data=synthetic",
    "data.options.size=512",
    "callbacks=minimal",
    "eval=clean",
    "threads=1",
    "test=false",
    "callbacks.early_stopping.enabled=false",
]


def search_cmd(n_trials: int, epochs: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "train.py"),
        "hparams_search=tpe",
        *TINY,
        f"trainer.max_epochs={epochs}",
        f"hydra.sweeper.n_trials={n_trials}",
        *extra,
    ]


def env_for(root: Path) -> dict[str, str]:
    return {**os.environ, "WEIGHTSHARE_ROOT": str(root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def study_dir(root: Path) -> Path:
    (found,) = (root / "outputs" / "hparams_tpe" / "search").iterdir()
    return found


def start_and_stop(cmd: list[str], root: Path, ready: callable, sig: signal.Signals) -> subprocess.Popen:
    """Start the search; send ``sig`` once ``ready(study directory)`` is true; return the ended process."""
    proc = subprocess.Popen(cmd, env=env_for(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            search = root / "outputs" / "hparams_tpe" / "search"
            if search.is_dir() and any(ready(d) for d in search.iterdir()):
                proc.send_signal(sig)
                break
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
    proc.wait(timeout=120)
    return proc


def studies(directory: Path) -> list[optuna.Study]:
    storage = open_storage(f"sqlite:///{directory / 'optuna.db'}")
    return [
        optuna.load_study(study_name=s.study_name, storage=storage) for s in optuna.get_all_study_summaries(storage)
    ]


def test_killed_search_reruns_to_completion_records_the_kill_and_resumes_untouched(tmp_path: Path) -> None:
    cmd = search_cmd(3, 1)
    # SIGKILL while the second trial trains: its results.json stays `running`
    killed = start_and_stop(
        cmd, tmp_path, lambda d: (read_json(d / "1" / "results.json") or {}).get("status") == "running", signal.SIGKILL
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout.read()[-3000:]
    directory = study_dir(tmp_path)
    assert read_json(directory / "1" / "results.json")["status"] == "running"
    first = read_json(directory / "0" / "results.json")
    assert first["status"] == "completed"

    rerun = subprocess.run(cmd, env=env_for(tmp_path), capture_output=True, text=True, timeout=180)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-3000:]
    assert f"resuming study {directory.name}: 1 of 3 trials done" in out
    (study,) = studies(directory)  # the rerun found the same study, in the same directory
    assert study.study_name == directory.name
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, *[TrialState.COMPLETE] * 2]
    assert ATTR_INTERRUPTED in trials[1].user_attrs
    (retry,) = [t for t in trials if t.user_attrs.get(ATTR_RETRY_OF) == 1]
    assert retry.params == trials[1].params
    record = read_json(directory / "1" / "results.json")
    assert record["status"] == "interrupted" and "killed" in record["error"]
    assert record[RETRIED_AS] == str(retry.number)
    assert read_json(directory / str(retry.number) / "results.json")["status"] == "completed"
    assert read_json(directory / "0" / "results.json") == first  # the finished trial was not trained again
    assert re.search(rf"interrupted, retried as {retry.number}", out)

    # the identical command once more: nothing to do, nothing trained, exit 0
    jobs = sorted(p.name for p in directory.iterdir() if p.is_dir())
    again = subprocess.run(cmd, env=env_for(tmp_path), capture_output=True, text=True, timeout=180)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-3000:]
    assert f"resuming study {directory.name}: 3 of 3 trials done" in out
    assert sorted(p.name for p in directory.iterdir() if p.is_dir()) == jobs
    assert len(studies(directory)[0].trials) == 4


def test_sigterm_then_resume_true_keeps_the_study_and_prints_how_to_resume(tmp_path: Path) -> None:
    cmd = search_cmd(1, 4, "data.options.size=1024")
    # SIGTERM (preemption, a time limit) once the first trial has finished an epoch
    stopped = start_and_stop(
        cmd, tmp_path, lambda d: len(read_metrics_csv(d / "0" / "metrics.csv")) >= 1, signal.SIGTERM
    )
    out = stopped.stdout.read()
    assert stopped.returncode == 143, out[-3000:]
    directory = study_dir(tmp_path)
    assert read_json(directory / "0" / "results.json")["status"] == "interrupted"
    # the sweep-level way to resume: the exact command (its directory is the study's, no hydra.sweep.dir needed)
    (advice,) = re.findall(r"Resume the study (\S+) \(finished trials are kept\): (.*)", out)
    assert advice[0] == directory.name
    assert advice[1].split()[1:] == [str(REPO / "train.py"), *cmd[2:]]

    resumed = subprocess.run([*cmd, "resume=true"], env=env_for(tmp_path), capture_output=True, text=True, timeout=180)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert f"resuming study {directory.name}: 0 of 1 trials done" in out
    assert study_dir(tmp_path) == directory  # resume=true is not part of the study's name
    (study,) = studies(directory)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].user_attrs[ATTR_RETRY_OF] == 0
    record = read_json(directory / "0" / "results.json")
    assert record["status"] == "interrupted" and "SIGTERM" in record["error"] and record[RETRIED_AS] == "1"
    assert read_json(directory / "1" / "results.json")["status"] == "completed"
