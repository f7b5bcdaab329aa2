"""Full disks (issue #18, item 7): a job that meets ENOSPC is recorded ``failed`` with the reason,
the sweep's summary names ENOSPC, and no temporary file remains.

Before: with a 2 MB tmpfs as the sweep directory, an ENOSPC traceback and ``results.json``
stuck at ``running``; in a pack, a summary saying "still 'running' ... (killed without a
word?)" and a ``.best.ckpt.tmp`` left behind.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tiny_runs import TINY_RUN
from weightshare.hydra_callbacks import sweep_failure, sweep_rows
from weightshare.job import Job

REPO = Path(__file__).resolve().parents[1]
#: 1.3 MB checkpoints: best.ckpt fits on a 2 MiB disk, last.ckpt beside it does not
TINY = [*TINY_RUN, "trainer.max_epochs=2"]


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".write_test" in p.name]


def _fill(disk: Path) -> None:
    """Fill the filesystem to the last byte."""
    with (disk / "filler").open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=packed"]], ids=["basic", "packed"])
def test_a_sweep_on_a_full_disk_records_enospc_and_leaves_no_temporary_files(small_tmpfs, launcher) -> None:
    sweep = small_tmpfs(2048) / "sweep"
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", *TINY, "seed=0,1", *launcher, f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for job in ("0", "1"):
        res = json.loads((sweep / job / "results.json").read_text())
        assert res["status"] == "failed", res
        assert res["error"].startswith("ENOSPC: the disk is full"), res["error"]
    assert "ENOSPC: the disk is full" in proc.stdout  # the error list under the sweep's table
    assert "2 of 2 jobs did not complete (2 failed)" in proc.stderr
    assert _temporaries(sweep) == []


def test_a_failure_is_written_in_place_when_the_disk_has_no_room_for_a_temporary_file(compose, small_tmpfs) -> None:
    disk = small_tmpfs(512)
    cfg = compose(TINY, output_dir=disk / "run")
    job = Job(cfg).open()
    job.save()  # status running, as a job that was training when the disk filled
    _fill(disk)
    job.record_failure(OSError(errno.ENOSPC, "No space left on device", str(disk / "run" / "metrics.csv")))
    res = json.loads((disk / "run" / "results.json").read_text())
    assert res["status"] == "failed"
    assert res["error"].startswith(f"ENOSPC: the disk is full (no space left writing {disk / 'run' / 'metrics.csv'})")
    assert _temporaries(disk) == []


def test_the_summary_names_enospc_when_a_job_could_not_write_its_record(small_tmpfs) -> None:
    disk = small_tmpfs(512)
    for job, status in (("0", "running"), ("1", None)):  # killed by the full disk before its last write / any write
        (disk / job).mkdir()
        if status:
            (disk / job / "results.json").write_text(json.dumps({"status": status}))
        else:
            (disk / job / ".hydra").mkdir()
    _fill(disk)
    rows = sweep_rows(disk)
    assert [r["status"] for r in rows] == ["running", "missing"]
    for r in rows:
        assert f"the disk holding {disk}: a full disk (ENOSPC) may have stopped it" in r["error"]
    assert "1 running, 1 missing" in (sweep_failure(rows) or "")


def test_the_summary_does_not_blame_the_disk_when_there_is_room(tmp_path) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "results.json").write_text(json.dumps({"status": "running"}))
    (row,) = sweep_rows(tmp_path)
    assert "ENOSPC" not in row["error"] and "killed without a word" in row["error"]


def test_injected_enospc_on_the_record_falls_back_to_writing_in_place(compose, tmp_path, monkeypatch) -> None:
    """Where no tmpfs can be mounted: every atomic write of results.json fails with ENOSPC."""
    import weightshare.job as job_module

    job = Job(compose(TINY, output_dir=tmp_path / "run")).open()
    job.save()

    def no_space(path, obj) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(job_module, "atomic_write_json", no_space)
    job.record_failure(OSError(errno.ENOSPC, "No space left on device"))
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "failed" and res["error"].startswith("ENOSPC: the disk is full")
    assert _temporaries(tmp_path) == []


def test_injected_full_disk_is_named_by_the_summary(tmp_path, monkeypatch) -> None:
    import os

    import weightshare.hydra_callbacks as hc

    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "results.json").write_text(json.dumps({"status": "running"}))
    full = os.statvfs_result((4096, 4096, 1000, 0, 0, 100, 0, 0, 0, 255))
    monkeypatch.setattr(hc.os, "statvfs", lambda path: full)
    (row,) = sweep_rows(tmp_path)
    assert "only 0.0 MiB free" in row["error"] and "ENOSPC" in row["error"]


def test_enospc_is_named_whatever_wrapped_it() -> None:
    from weightshare.results import error_text

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/x/metrics.csv")
        except OSError as inner:
            raise RuntimeError("writing the epoch row failed") from inner
    except RuntimeError as exc:
        text = error_text(exc)
    assert text.startswith("ENOSPC: the disk is full (no space left writing /x/metrics.csv); RuntimeError: writing")
    assert error_text(ValueError("bad")) == "ValueError: bad"


def test_a_single_run_on_a_full_disk_ends_with_one_line_naming_enospc(compose, small_tmpfs, capsys) -> None:
    from weightshare.train import task

    disk = small_tmpfs(2048)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        task(compose(TINY, output_dir=disk / "run"))
    assert info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ENOSPC: the disk is full (no space left writing ")
    assert json.loads((disk / "run" / "results.json").read_text())["status"] == "failed"
    assert _temporaries(disk) == []


def test_a_sweep_into_a_full_disk_stops_before_any_job_and_leaves_no_probe(small_tmpfs) -> None:
    from weightshare.sweep_lock import OutputDirGuard

    disk = small_tmpfs(256)
    _fill(disk)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(disk / "sweep")}}})
    with pytest.raises(SystemExit) as info:
        OutputDirGuard().on_multirun_start(config)
    assert info.value.code == 2
    assert list((disk / "sweep").iterdir()) == []  # no .write_test left behind
