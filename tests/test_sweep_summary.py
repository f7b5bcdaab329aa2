"""The end-of-multirun summary: its rows, each distinct error once, and the sweep's exit status.

The unit tests read fixture sweeps (tests/fixtures/fake_sweep.py); the subprocess test runs
``python train.py -m`` for real, because only a real process shows the exit status Hydra ends
with (a callback's ``Exception`` would become a warning and exit 0).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from weightshare.hydra_callbacks import SweepSummary, error_list, print_sweep_table, sweep_failure, sweep_rows

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ws_fake_sweep", REPO / "tests" / "fixtures" / "fake_sweep.py")
fs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fs)


def _end_of_multirun(sweep_dir: Path) -> None:
    SweepSummary().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}}))


def test_rows_of_a_sweep_with_failures(tmp_path: Path) -> None:
    root = fs.build_rotate_sweep_with_failures(tmp_path / "rot")
    rows = sweep_rows(root)
    # job 9 was never created; 8 has .hydra/ only; 4's results.json is cut short
    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "4", "5", "6", "7", "8"]
    status = {r["job"]: r["status"] for r in rows}
    assert status == {**{j: "completed" for j in "012567"}, "3": "failed", "4": "corrupt", "8": "missing"}
    assert rows[3]["error"] == "RuntimeError: CUDA out of memory"
    assert rows[0]["error"] is None and rows[0]["val/acc"] == pytest.approx(fs.epoch_row("cnn", 0.2, 0, 3)["val/acc"])
    assert error_list(rows) == [
        ("RuntimeError: CUDA out of memory", ["3"]),
        ("results.json unreadable", ["4"]),
        ("no results.json (killed before it wrote one?)", ["8"]),
    ]
    assert sweep_failure(rows) == (
        "3 of 9 jobs did not complete (1 failed, 1 corrupt, 1 missing); their errors are listed under the table"
    )


def test_each_distinct_error_once_with_its_jobs_and_exit_status_1(tmp_path: Path, capsys) -> None:
    root = tmp_path / "sweep"
    oom = "RuntimeError: CUDA out of memory. Tried to allocate [2.00 GiB]"  # brackets: not rich markup
    fs.write_job(root / "0", "cnn", 0.0, 0, "translate")
    fs.write_job(root / "1", "fcn", 0.0, 0, "translate", status="failed", error=oom)
    fs.write_job(root / "2", "cnn", 0.1, 0, "translate", status="diverged", error="loss is nan at epoch 2")
    fs.write_job(root / "3", "fcn", 0.1, 0, "translate", status="failed", error=oom)
    fs.write_job(root / "4", "fcn", 0.2, 0, "translate", status="failed", error=None)
    fs.write_job(root / "5", "fcn", 0.2, 1, "translate", status="pruned")  # stopped on purpose: fine
    fs.write_job(root / "6", "fcn", 0.2, 2, "translate", status="running")  # killed without a word
    with pytest.raises(SystemExit) as exit_info:
        _end_of_multirun(root)
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    assert out.count(oom) == 1  # once, however many jobs it hit
    assert f"[1] jobs 1, 3: {oom}" in out
    assert "[2] job 2: loss is nan at epoch 2" in out
    assert "[3] job 4: failed, no error recorded" in out
    assert "[4] job 6: still 'running' when the sweep ended (killed without a word?)" in out
    assert "failed [1]" in out and "diverged [2]" in out and "failed [3]" in out and "running [4]" in out
    assert "[5]" not in out and "pruned [" not in out
    assert out.index("┘") < out.index("[1] jobs")  # under the table
    assert err.strip() == (
        "error: 5 of 7 jobs did not complete (3 failed, 1 diverged, 1 running); their errors are listed under the table"
    )


def test_a_sweep_that_completed_prints_no_error_and_returns(tmp_path: Path, capsys) -> None:
    root = fs.build_translate_sweep(tmp_path / "ok")
    _end_of_multirun(root)  # no SystemExit
    out, err = capsys.readouterr()
    assert "completed" in out and "[1]" not in out and err == ""
    assert sweep_failure(print_sweep_table(root)) is None
    _end_of_multirun(tmp_path / "never-created")  # a sweep dir Hydra did not make: nothing to say


def test_multirun_with_failed_jobs_goes_on_and_exits_1(tmp_path: Path) -> None:
    """Every job runs (each fails its start check), the same error is listed once, exit status 1.

    Missing checkpoint files: a swept value out of range would be refused before the sweep starts.
    """
    sweep = tmp_path / "sweep"
    one, two = tmp_path / "one.ckpt", tmp_path / "two.ckpt"
    args = ["-m", "data=synthetic", "threads=1", f"ckpt_path={one},{two}", "aug.translate=0,0.1"]
    args.append(f"hydra.sweep.dir={sweep}")
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    for job in range(4):  # the sweep went past the failed jobs
        assert json.loads((sweep / str(job) / "results.json").read_text())["status"] == "failed"
    out = proc.stdout
    lines = out[out.rindex("┘") :].splitlines()[1:]  # what the summary prints under its table
    first = [line for line in lines if line.startswith("[1] jobs 0, 1: ")]
    second = [line for line in lines if line.startswith("[2] jobs 2, 3: ")]
    assert len(first) == 1 and "one.ckpt" in first[0], proc.stdout[-3000:]
    assert len(second) == 1 and "two.ckpt" in second[0], proc.stdout[-3000:]
    assert lines == [*first, *second]  # each error once, though it hit two jobs
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: 4 of 4 jobs did not complete (4 failed); their errors are listed under the table"
    )
    assert "Traceback" not in proc.stderr


def test_a_launcher_records_the_end_only_of_a_job_that_did_not(tmp_path: Path) -> None:
    """``record_end`` (SLURM ended the job, a pack left a member): a running or missing record gets the
    status, the error, merged sections and an identity; a final status the job wrote is kept."""
    from weightshare.job import record_end

    fs.write_job(tmp_path / "0", "cnn", 0.1, 0, "translate", status="running")
    (tmp_path / "0" / "results.json").write_text(
        json.dumps({**json.loads((tmp_path / "0" / "results.json").read_text()), "slurm": {"job_id": "7"}})
    )
    record = record_end(tmp_path / "0", "failed", "NODE_FAIL", extra={"slurm": {"state": "NODE_FAIL"}})
    stored = json.loads((tmp_path / "0" / "results.json").read_text())
    assert record == stored and (stored["status"], stored["error"]) == ("failed", "NODE_FAIL")
    assert stored["slurm"] == {"job_id": "7", "state": "NODE_FAIL"} and stored["output_dir"] == str(tmp_path / "0")
    assert record_end(tmp_path / "0", "interrupted", "later") is None  # final now: kept
    assert json.loads((tmp_path / "0" / "results.json").read_text()) == stored

    def broken() -> dict:
        raise ValueError("no identity")

    record = record_end(tmp_path / "1", "interrupted", "terminated (SIGTERM)", identity=broken)  # died unrecorded
    assert record == {"identity": {}, "status": "interrupted", "error": "terminated (SIGTERM)",
                      "output_dir": str(tmp_path / "1")}  # fmt: skip
    assert json.loads((tmp_path / "1" / "results.json").read_text()) == record


def test_an_interrupted_job_counts_as_done_only_when_its_retry_is(tmp_path: Path, capsys) -> None:
    """The Optuna sweeper re-runs a killed trial as a new job and names it in the killed job's
    record (``retried_as``): the sweep did that work once, so the sweep exits 0 when the retry did."""
    from weightshare.job import RETRIED_AS, record_killed

    root = tmp_path / "sweep"
    fs.write_job(root / "0", "cnn", 0.0, 0, "translate")
    fs.write_job(root / "1", "cnn", 0.1, 0, "translate", status="running")  # SIGKILL: no word
    fs.write_job(root / "2", "cnn", 0.1, 0, "translate")  # its retry
    assert record_killed(root / "1", "its sweeper (pid 7 on h) is gone")
    record = json.loads((root / "1" / "results.json").read_text())
    assert (record["status"], record["error"]) == ("interrupted", "killed: its sweeper (pid 7 on h) is gone")
    with pytest.raises(SystemExit):  # interrupted, no retry named yet: not done
        _end_of_multirun(root)
    assert record_killed(root / "1", "its sweeper (pid 7 on h) is gone", retried_as="2")
    assert not record_killed(root / "1", "again", retried_as="2")  # nothing left to change
    assert not record_killed(root / "0", "a finished job keeps its record")
    assert json.loads((root / "0" / "results.json").read_text())["status"] == "completed"
    capsys.readouterr()
    _end_of_multirun(root)  # no SystemExit
    out, err = capsys.readouterr()
    assert "interrupted, retried as 2" in out and err == ""
    assert json.loads((root / "1" / "results.json").read_text())[RETRIED_AS] == "2"
    # a retry that failed leaves the work undone: both count
    fs.write_job(root / "2", "cnn", 0.1, 0, "translate", status="failed", error="RuntimeError: boom")
    rows = sweep_rows(root)
    assert sweep_failure(rows) == (
        "2 of 3 jobs did not complete (1 failed, 1 interrupted); their errors are listed under the table"
    )
