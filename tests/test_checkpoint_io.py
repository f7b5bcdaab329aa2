"""Atomic, verifiable checkpoints (issue #18, item 4).

A checkpoint under its final name is always complete: it is written to a temporary file in
its own directory, fsynced, and renamed. A truncated or corrupt checkpoint on resume is a
one-line error that says so and names what can be used instead.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import weightshare.checkpoints as checkpoints
from tiny_runs import TINY_RUN
from weightshare.checkpoints import AtomicCheckpointIO, atomic_torch_save, load_checkpoint
from weightshare.errors import CheckpointError
from weightshare.train import train

REPO = Path(__file__).resolve().parents[1]
#: a run with 1.3 MB checkpoints in about two seconds
TINY = TINY_RUN


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize(
    "exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()], ids=["enospc", "ctrl_c"]
)
def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, exc) -> None:
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"epoch": 0, "w": torch.arange(1000.0)}, path)
    before = path.read_bytes()

    def failing_fsync(fd: int) -> None:  # the new bytes are in the temporary file: fail before the rename
        raise exc

    monkeypatch.setattr(checkpoints.os, "fsync", failing_fsync)
    with pytest.raises(type(exc)) as info:
        atomic_torch_save({"epoch": 1, "w": torch.zeros(5000)}, path)
    if isinstance(exc, OSError):
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)  # names the file
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["last.ckpt"]


def test_sigkill_mid_write_never_leaves_a_partial_file_under_the_final_name(tmp_path) -> None:
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"epoch": 0}, path)
    script = (
        "import os, signal, torch, weightshare.checkpoints as c\n"
        "c.os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"c.atomic_torch_save({{'epoch': 1, 'w': torch.zeros(100000)}}, {str(path)!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(path) == {"epoch": 0}
    # only SIGKILL can leave the temporary file, hidden and never under a final name
    assert [n for n in _files(tmp_path) if n != "last.ckpt"] == [
        n for n in _files(tmp_path) if n.startswith(".last.ckpt.") and n.endswith(".tmp")
    ]


def test_every_trainer_writes_checkpoints_through_the_atomic_plugin(compose, tmp_path) -> None:
    from weightshare.builders import build_run

    cfg = compose([*TINY, "trainer.max_epochs=1"], output_dir=tmp_path)
    run = build_run(cfg, tmp_path, loggers=False)
    assert isinstance(run.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.parametrize(
    ("disk_kib", "stopped_at", "left"),
    [(2048, "last.ckpt", ["best.ckpt"]), (1024, "best.ckpt", [])],
    ids=["last", "best"],
)
def test_full_disk_during_a_checkpoint_leaves_no_partial_file_and_no_staged_copy(
    compose, tmp_path, small_tmpfs, monkeypatch, disk_kib, stopped_at, left
) -> None:
    """A 2 MiB disk holds best.ckpt (1.3 MB) but not last.ckpt beside it; a 1 MiB disk not even best.ckpt.

    Before: Lightning staged the file in $TMPDIR and copied it into place, which stopped at
    ENOSPC and left a truncated last.ckpt (best.ckpt) under its final name.
    """
    disk = small_tmpfs(disk_kib)
    staging = tmp_path / "tmpdir"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    cfg = compose([*TINY, "trainer.max_epochs=1"], output_dir=disk / "run")
    with pytest.raises(OSError) as info:
        train(cfg)
    assert info.value.errno == errno.ENOSPC
    ckpts = disk / "run" / "checkpoints"
    assert _files(ckpts) == left  # no partial file, no temporary file
    for name in left:
        assert load_checkpoint(ckpts / name)["epoch"] == 0  # complete, CRCs verified
    assert [p for p in staging.rglob("*") if p.is_file()] == []  # nothing staged in $TMPDIR
    res = json.loads((disk / "run" / "results.json").read_text())
    assert res["status"] == "failed" and res["error"].startswith("ENOSPC") and stopped_at in res["error"]


@pytest.fixture()
def finished_run(compose, tmp_path) -> Path:
    """A completed 2-epoch run (last.ckpt of epoch 1, best.ckpt of its best epoch)."""
    out = tmp_path / "run"
    train(compose([*TINY, "trainer.max_epochs=2", "callbacks.early_stopping.enabled=false"], output_dir=out))
    return out


def test_last_checkpoint_is_the_last_epoch_even_when_it_did_not_improve(compose, tmp_path) -> None:
    """last.ckpt holds the final epoch and best.ckpt the monitor's best, also when they differ.

    Lightning's own ``save_last`` rewrote last.ckpt only on improving epochs, so a resume went back
    to the best epoch. Monitoring ``val/loss`` for its *maximum* makes the first epoch the best.
    """
    from weightshare.results import read_metrics_csv

    out = tmp_path / "run"
    overrides = [*TINY, "trainer.max_epochs=3", "callbacks.early_stopping.enabled=false"]
    overrides += ["callbacks.checkpoint.monitor=val/loss", "callbacks.checkpoint.mode=max"]
    train(compose(overrides, output_dir=out))
    losses = [row["val/loss"] for row in read_metrics_csv(out / "metrics.csv")]
    best_epoch = max(range(len(losses)), key=losses.__getitem__)
    assert len(losses) == 3 and best_epoch != 2, losses  # the last epoch did not improve
    epoch_of = {name: load_checkpoint(out / "checkpoints" / name)["epoch"] for name in ("best.ckpt", "last.ckpt")}
    assert epoch_of == {"best.ckpt": best_epoch, "last.ckpt": 2}
    assert _files(out / "checkpoints") == ["best.ckpt", "last.ckpt"]


def test_a_resumed_float64_run_is_bit_identical_to_an_uninterrupted_one(compose, tmp_path) -> None:
    """1 epoch, then ``resume=true`` to 3, equals 3 epochs in one go: every weight and Adam state, exactly.

    Lightning restores a checkpoint's weights before it casts the module to the precision, so
    the float64 weights used to be loaded into float32 parameters (4e-8 off after two epochs).
    """
    overrides = [*TINY, "trainer.precision=64-true", "callbacks.early_stopping.enabled=false"]
    train(compose([*overrides, "trainer.max_epochs=3"], output_dir=tmp_path / "ref"))
    train(compose([*overrides, "trainer.max_epochs=1"], output_dir=tmp_path / "run"))
    train(compose([*overrides, "trainer.max_epochs=3", "resume=true"], output_dir=tmp_path / "run"))
    ref, run = (load_checkpoint(tmp_path / d / "checkpoints" / "last.ckpt") for d in ("ref", "run"))
    assert ref["epoch"] == run["epoch"] == 2
    assert ref["state_dict"].keys() == run["state_dict"].keys()
    for key, value in ref["state_dict"].items():
        assert torch.equal(value, run["state_dict"][key]), key
        assert value.dtype == torch.float64 or not key.startswith("net."), key
    for index, state in ref["optimizer_states"][0]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, run["optimizer_states"][0]["state"][index][name]), (index, name)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a tensor: torch.load alone would load it silently
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte], ids=["truncated", "flipped_byte"])
def test_a_damaged_last_checkpoint_is_refused_naming_best_and_starting_over(compose, finished_run, damage) -> None:
    last = finished_run / "checkpoints" / "last.ckpt"
    damage(last)
    before = {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()}
    cfg = compose([*TINY, "trainer.max_epochs=3", "callbacks.early_stopping.enabled=false", "ckpt_path=last"],
                  output_dir=finished_run)  # fmt: skip
    with pytest.raises(CheckpointError) as info:
        train(cfg)
    message = str(info.value)
    assert f"checkpoint {last} is truncated or corrupt" in message and "\n" not in message
    assert f"ckpt_path={finished_run / 'checkpoints' / 'best.ckpt'}" in message and "start over" in message
    assert {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()} == before  # nothing written
    # the named alternative works: resume from best.ckpt
    best_epoch = load_checkpoint(finished_run / "checkpoints" / "best.ckpt")["epoch"]
    cfg.ckpt_path = str(finished_run / "checkpoints" / "best.ckpt")
    train(cfg)
    assert json.loads((finished_run / "results.json").read_text())["resumed"] == 1  # the same run, continued
    rows = (finished_run / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [*range(best_epoch + 1), *range(best_epoch + 1, 3)]


def test_cli_zero_byte_last_checkpoint_is_one_line_exit_2_not_weights_only_advice(finished_run) -> None:
    """The issue's case: a kill during Lightning's copy left last.ckpt at 0 bytes."""
    last = finished_run / "checkpoints" / "last.ckpt"
    last.write_bytes(b"")
    results = (finished_run / "results.json").read_bytes()
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *TINY, "trainer.max_epochs=3",
         "callbacks.early_stopping.enabled=false", "resume=true", f"hydra.run.dir={finished_run}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: checkpoint {last} is truncated or corrupt (0 bytes)")
    assert "best.ckpt" in lines[0] and "weights_only" not in lines[0]
    assert (finished_run / "results.json").read_bytes() == results


def test_a_crafted_pickle_is_still_refused_as_not_weights_only(tmp_path) -> None:
    path = tmp_path / "plain.ckpt"
    import pickle

    with path.open("wb") as fh:
        pickle.dump({"x": os.system}, fh)  # a global: refused by the weights-only unpickler
    with pytest.raises(CheckpointError, match=r"refusing to load checkpoint .* not a weights-only file"):
        load_checkpoint(path)
