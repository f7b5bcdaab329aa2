"""Per-member control in a pack: early stopping, divergence, resume after SIGKILL, SIGTERM."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from packed_helpers import assert_same_runs, make_cfg, run_single
from packed_runner import configs
from weightshare.packed import train_pack
from weightshare.packed.data import PackData
from weightshare.packed.member import Member, MemberTrainer
from weightshare.results import read_json, read_metrics_csv

RUNNER = Path(__file__).resolve().parent / "packed_runner.py"


def test_early_stopping_follows_the_single_run_rule(tmp_path):
    # lr 1e-9: val/acc never changes, so patience 2 stops after epoch 2; the other member goes on
    common = ["model=cnn", "trainer.max_epochs=5", "callbacks.early_stopping.patience=2"]
    members = [["optimizer.lr=1e-9", "seed=3"], ["optimizer.lr=0.003", "data.fold=1"]]
    for i, m in enumerate(members):
        run_single(make_cfg(tmp_path / f"single{i}", [*common, *m]))
    train_pack([make_cfg(tmp_path / f"pack{i}", [*common, *m]) for i, m in enumerate(members)])
    for i in range(2):
        assert_same_runs(tmp_path / f"single{i}", tmp_path / f"pack{i}")
    stopped = read_json(tmp_path / "pack0" / "results.json")
    assert stopped["epochs_completed"] == 3 and stopped["stopped_epoch"] == 2
    # the stopped member left the pack; its last.ckpt is the single run's (Lightning writes it
    # in epochs that improved, and at the end of training if it never did)
    last = [torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True) for r in ("single0", "pack0")]
    assert last[0]["epoch"] == last[1]["epoch"] and last[0]["global_step"] == last[1]["global_step"]


def test_a_diverged_member_is_recorded_and_the_others_finish(tmp_path, monkeypatch):
    common = ["model=fcn", "trainer.max_epochs=3"]
    members = [["seed=0"], ["seed=1", "data.fold=1"], ["seed=2", "data.fold=2"]]
    train_pack([make_cfg(tmp_path / f"ref{i}", [*common, *m]) for i, m in enumerate(members) if i != 1])
    original = PackData.on_after_batch_transfer

    def poisoned(self, batch, dataloader_idx):
        out = original(self, batch, dataloader_idx)
        if isinstance(out, dict):  # an evaluation batch
            return out
        x, y, ids = out
        if 1 in ids and poisoned.calls >= 10:  # member 1, from its 11th step (epoch 1)
            x = x.clone()
            x[ids.index(1)] = float("nan")
        poisoned.calls += 1
        return x, y, ids

    poisoned.calls = 0
    monkeypatch.setattr(PackData, "on_after_batch_transfer", poisoned)
    values = train_pack([make_cfg(tmp_path / f"pack{i}", [*common, *m]) for i, m in enumerate(members)])
    bad = read_json(tmp_path / "pack1" / "results.json")
    assert bad["status"] == "diverged" and "loss=nan at epoch 1" in bad["error"]
    assert values[1] is None and values[0] is not None and values[2] is not None
    assert len(read_metrics_csv(tmp_path / "pack1" / "metrics.csv")) == 1  # epoch 0 only
    for i, ref in ((0, "ref0"), (2, "ref2")):
        assert_same_runs(tmp_path / ref, tmp_path / f"pack{i}")


def _start(root: Path, epochs: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(RUNNER), str(root), str(epochs)], env=env, stderr=subprocess.PIPE)


def _wait_rows(proc: subprocess.Popen, csv: Path, rows: int, timeout: float = 240.0) -> None:
    t0 = time.time()
    while len(read_metrics_csv(csv)) < rows:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else "exited"
        assert time.time() - t0 < timeout, "no progress"
        time.sleep(0.05)


def test_resume_after_sigkill_continues_every_member(tmp_path):
    train_pack(configs(tmp_path / "ref", 4, resume=False))
    proc = _start(tmp_path / "run", 4)
    _wait_rows(proc, tmp_path / "run" / "m1" / "metrics.csv", 2)
    proc.kill()
    proc.wait()
    before = [len(read_metrics_csv(tmp_path / "run" / f"m{i}" / "metrics.csv")) for i in range(2)]
    assert all(n < 4 for n in before)
    values = train_pack(configs(tmp_path / "run", 4, resume=True))
    assert all(v is not None and math.isfinite(v) for v in values)
    for i in range(2):
        rows = read_metrics_csv(tmp_path / "run" / f"m{i}" / "metrics.csv")
        assert [r["epoch"] for r in rows] == [0, 1, 2, 3]  # each epoch once
        assert read_json(tmp_path / "run" / f"m{i}" / "results.json")["resumed"] == 1
        # exact: the pack is cast to float64 before Lightning restores the members' weights
        assert_same_runs(tmp_path / "ref" / f"m{i}", tmp_path / "run" / f"m{i}", tol=1e-9)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_marks_unfinished_members_interrupted_with_exit_143(tmp_path):
    proc = _start(tmp_path, 6)
    _wait_rows(proc, tmp_path / "m0" / "metrics.csv", 1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    for i in range(2):
        summary = read_json(tmp_path / f"m{i}" / "results.json")
        assert summary["status"] == "interrupted" and "SIGTERM" in summary["error"]


def test_skip_completed_outputs_and_loggers(tmp_path):
    """A completed member is not retrained; filter images, CSV logger and checkpoints like a single run's."""
    extra = ["model=fcn", "callbacks.filter_images.enabled=true", "logger=csv"]
    cfgs = [make_cfg(tmp_path / f"m{i}", [*extra, f"seed={i}"]) for i in range(2)]
    first = train_pack(cfgs)
    out = tmp_path / "m0"
    images = sorted(p.name for p in (out / "filters").glob("*.png"))
    assert "conv1_f0_epoch-init.png" in images and "conv1_f0_epoch-001.png" in images
    assert (out / "lightning_csv").is_dir() and (out / "config.yaml").is_file()
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    assert all(k.startswith(("net.", "val_acc_best")) for k in ckpt["state_dict"])
    summary = read_json(out / "results.json")
    assert summary["status"] == "completed" and summary["pack"]["size"] == 2
    assert summary["init"] and summary["test"]["acc"] == summary["final"]["val/acc"]
    stamp = (out / "metrics.csv").stat().st_mtime_ns
    again = train_pack([make_cfg(tmp_path / f"m{i}", [*extra, f"seed={i}"]) for i in range(2)])
    assert again == first
    assert (out / "metrics.csv").stat().st_mtime_ns == stamp  # not retrained


def test_bad_packs_are_refused():
    with pytest.raises(ValueError, match="not packable: the two-stage divergence"):
        train_pack([make_cfg(Path("/nonexistent/x"), ["model=fcn", "divergence.cnn_epochs=1"])])
    with pytest.raises(ValueError, match="differs from member 0 in shared settings"):
        train_pack([make_cfg(Path("/nonexistent/a"), ["model=cnn"]), make_cfg(Path("/nonexistent/b"), ["model=fcn"])])


def test_each_member_has_its_own_wandb_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for var, sub in {"WANDB_CACHE_DIR": "c", "WANDB_CONFIG_DIR": "cfg", "WANDB_DATA_DIR": "d"}.items():
        monkeypatch.setenv(var, str(tmp_path / sub))
    for var in ("WANDB_SILENT", "WANDB_DISABLE_GIT", "WANDB_DISABLE_CODE"):
        monkeypatch.setenv(var, "true")
    extra = ["model=cnn", "logger=wandb", "logger.wandb.offline=true", "trainer.max_epochs=1"]
    train_pack([make_cfg(tmp_path / f"m{i}", [*extra, f"data.fold={i}"]) for i in range(2)])
    wandb.teardown()
    for i in range(2):
        (run_dir,) = (tmp_path / f"m{i}" / "wandb").glob("offline-run-*")
        data = next(run_dir.glob("run-*.wandb")).read_bytes()
        assert b"val/acc" in data and b"param_count" in data
        assert f"cnn-synthetic-noaug-fold{i}".encode() in data


def test_optuna_pruning_per_member(tmp_path):
    """Each member reports to its own trial; a pruned member stops as ``pruned``, the other trains on."""
    optuna = pytest.importorskip("optuna")
    from weightshare.trial_protocol import STUDY_ATTR_PRUNER, open_storage

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="pk", storage=open_storage(url), direction="maximize")
    study.set_user_attr(STUDY_ATTR_PRUNER, {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1})
    study.add_trial(optuna.trial.create_trial(value=0.9, intermediate_values=dict.fromkeys(range(5), 0.9)))
    trials = [study.ask() for _ in range(2)]
    extra = ["model=cnn", "trainer.max_epochs=3", f"trial.storage={url}", "trial.study_name=pk"]
    extra.append("trial.monitor=val/acc")
    cfgs = [make_cfg(tmp_path / "pruned", [*extra, f"trial.trial_number={trials[0].number}"])]
    cfgs.append(make_cfg(tmp_path / "free", ["model=cnn", "trainer.max_epochs=3", "data.fold=1"]))
    train_pack(cfgs)
    pruned, free = read_json(tmp_path / "pruned" / "results.json"), read_json(tmp_path / "free" / "results.json")
    assert pruned["status"] == "pruned" and pruned["epochs_completed"] == 1
    assert free["status"] == "completed" and free["epochs_completed"] == 3
    assert study.trials[trials[0].number].user_attrs.get("pruned") is True


def test_resume_of_finished_members_trains_nothing_and_keeps_the_record(tmp_path):
    cfgs = [make_cfg(tmp_path / f"m{i}", ["model=cnn", f"seed={i}"]) for i in range(2)]
    first = train_pack(cfgs)
    before = [read_json(tmp_path / f"m{i}" / "results.json") for i in range(2)]
    again = train_pack([make_cfg(tmp_path / f"m{i}", ["model=cnn", f"seed={i}", "resume=true"]) for i in range(2)])
    assert again == first
    for i in range(2):
        after = read_json(tmp_path / f"m{i}" / "results.json")
        assert after["status"] == "completed" and after["resumed"] == 1
        # last.ckpt is the final epoch: nothing is trained again, the test pass is rerun on the same weights
        timing = ("time/epoch_s", "train/images_per_s")
        assert after["test"] == before[i]["test"]
        assert {k: v for k, v in after["final"].items() if k not in timing} == {
            k: v for k, v in before[i]["final"].items() if k not in timing
        }
        assert len(read_metrics_csv(tmp_path / f"m{i}" / "metrics.csv")) == 2


def test_a_packed_cnn_checkpoint_starts_an_fcn_by_init_from(tmp_path):
    """``model.init_from`` reads a pack member's checkpoint like a single run's (``net.*`` keys)."""
    import torch.nn.functional as F

    from weightshare.builders import build_model
    from weightshare.data.dataset import DataInfo

    train_pack([make_cfg(tmp_path / "cnn", ["model=cnn", "trainer.max_epochs=1"])])
    ckpt = tmp_path / "cnn" / "checkpoints" / "last.ckpt"
    cfg = make_cfg(tmp_path / "fcn", ["model=fcn", f"model.init_from={ckpt}"])
    info = DataInfo("synthetic", 1, 28, 28, 10)
    fcn = build_model(cfg.model, info).double()
    cnn = build_model(make_cfg(tmp_path / "x", ["model=cnn"]).model, info).double()
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    cnn.load_state_dict({k[4:]: v for k, v in state.items() if k[:4] == "net."})
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    # the FCN is built in float32 from the float64 checkpoint: equal up to float32 rounding
    torch.testing.assert_close(F.softmax(fcn(x), -1), F.softmax(cnn(x), -1), atol=1e-6, rtol=0)


def test_an_error_in_one_member_fails_only_that_member(tmp_path, monkeypatch):
    original = MemberTrainer.save_checkpoint

    def broken(self, filepath, *args, **kwargs):
        if self._member.out.name == "m1" and self.current_epoch == 0:
            raise OSError("No space left on device")
        return original(self, filepath, *args, **kwargs)

    monkeypatch.setattr(MemberTrainer, "save_checkpoint", broken)
    cfgs = [make_cfg(tmp_path / f"m{i}", ["model=cnn", "trainer.max_epochs=3", f"seed={i}"]) for i in range(3)]
    values = train_pack(cfgs)
    failed = read_json(tmp_path / "m1" / "results.json")
    assert failed["status"] == "failed" and "No space left on device" in failed["error"]
    assert values[1] is None and values[0] is not None and values[2] is not None
    for i in (0, 2):
        assert read_json(tmp_path / f"m{i}" / "results.json")["epochs_completed"] == 3


def test_a_member_failing_at_start_does_not_stop_the_others(tmp_path, monkeypatch):
    cfgs = [make_cfg(tmp_path / f"m{i}", ["model=cnn", "trainer.max_epochs=1", f"seed={i}"]) for i in range(3)]
    cfgs[2].logger.names = ["nosuchlogger"]  # refused by the config check, before the pack is built
    original = Member.build

    def build(self, dataset, group):
        if self.out.name == "m1":
            raise RuntimeError("logger backend unavailable")  # fails while the pack is built
        return original(self, dataset, group)

    monkeypatch.setattr(Member, "build", build)
    values = train_pack(cfgs)
    assert values[0] is not None and values[1] is None and values[2] is None
    assert read_json(tmp_path / "m0" / "results.json")["status"] == "completed"
    assert "logger backend unavailable" in read_json(tmp_path / "m1" / "results.json")["error"]
    assert "logger.names" in read_json(tmp_path / "m2" / "results.json")["error"]
