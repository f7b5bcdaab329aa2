"""Loggers built from the logger config, the W&B run name, and offline W&B runs."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from weightshare.builders import build_loggers
from weightshare.config.schema import LoggerConfig, TrainConfig, WandbConfig
from weightshare.errors import ConfigError
from weightshare.loggers import INIT_EPOCH, EpochWandbLogger, epoch_label, finish_wandb, format_aug, make_run_name
from weightshare.results import read_metrics_csv

ROOT = Path(__file__).resolve().parents[1]


def test_csv_and_tensorboard_loggers_write_into_run_dir(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = OmegaConf.structured(LoggerConfig(names=["csv", "tensorboard"]))
    csv, tb = build_loggers(cfg, tmp_path, "cnn-mnist-noaug-fold0", {"seed": 0})
    assert isinstance(csv, CSVLogger) and isinstance(tb, TensorBoardLogger)
    for logger in (csv, tb):
        logger.log_metrics({"val/acc": 0.75}, step=3)
        logger.log_metrics({"val/acc": 0.875}, step=7)
        logger.save()
        logger.finalize("success")
    assert Path(csv.log_dir) == tmp_path / "lightning_csv" / "version_0"
    df = pd.read_csv(Path(csv.log_dir) / "metrics.csv")
    assert df["val/acc"].tolist() == [0.75, 0.875] and df["step"].tolist() == [3, 7]
    assert Path(tb.log_dir) == tmp_path / "tensorboard" / "version_0"
    acc = EventAccumulator(tb.log_dir)
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("val/acc")] == [(3, 0.75), (7, 0.875)]
    assert "hp_metric" not in acc.Tags()["scalars"]


def test_unknown_duplicate_and_inconsistent_names_raise():
    with pytest.raises(ConfigError, match=r"logger\.names.*'mlflow'.*csv, tensorboard, wandb"):
        build_loggers(LoggerConfig(names=["csv", "mlflow"]), Path("."), "x", {})
    with pytest.raises(ConfigError, match="at most once"):
        build_loggers(LoggerConfig(names=["csv", "csv"]), Path("."), "x", {})
    bad = LoggerConfig(names=["wandb"], wandb=WandbConfig(offline=True, log_model=True))
    with pytest.raises(ConfigError, match="log_model"):
        build_loggers(bad, Path("."), "x", {})
    assert build_loggers(LoggerConfig(names=[]), Path("."), "x", {}) == []


def _cfg(**over) -> TrainConfig:
    cfg = TrainConfig()
    for dotted, value in over.items():
        node_name, key = dotted.split("__")
        setattr(getattr(cfg, node_name), key, value)
    return cfg


def test_run_name_encoding():
    assert make_run_name(_cfg()) == "cnn-mnist-noaug-fold0"
    assert make_run_name(_cfg(model__name="fcn", aug__translate=0.1)) == "fcn-mnist-translate0.1-fold0"
    name = make_run_name(
        _cfg(model__name="fcn", data__name="cifar10", data__fold=3, aug__translate=0.1, aug__noise=0.2)
    )
    assert name == "fcn-cifar10-translate0.1+noise0.2-fold3"
    assert make_run_name(_cfg(data__split="standard", aug__edge_noise=0.99)) == "cnn-mnist-edge_noise0.99-standard"
    vcp = _cfg(model__name="fcn", model__connectivity=0.5, aug__translate=0.3)
    assert make_run_name(vcp) == "fcn_conn0.5-mnist-translate0.3-fold0"
    assert make_run_name(_cfg(model__name="fcn", model__share_tile=2)) == "fcn_tile2-mnist-noaug-fold0"
    # a composed (DictConfig) config gives the same name as the dataclass
    dict_cfg = OmegaConf.structured(_cfg(model__name="fcn", aug__rotate=0.5, data__fold=4))
    assert make_run_name(dict_cfg) == "fcn-mnist-rotate0.5-fold4"
    assert format_aug({"translate": 0.0, "crop_padding": 4, "hflip": True}) == "crop4+hflip"


def test_run_name_depth_and_lr_suffixes():
    """The hparams grid (depth x lr) gets distinct names; defaults keep the short format."""
    # the paper's grid: depth {2, 3} x lr {1e-3, 1e-4} x ... must give distinct names
    names = {
        make_run_name(_cfg(model__name="fcn", model__depth=d, optimizer__lr=lr))
        for d in (2, 3)
        for lr in (None, 1e-3, 1e-4)
    }
    assert names == {
        "fcn-mnist-noaug-fold0",  # depth 3, lr null or equal to the MNIST default 1e-3
        "fcn-mnist-noaug-fold0-lr0.0001",
        "fcn-mnist-noaug-fold0-d2",
        "fcn-mnist-noaug-fold0-d2-lr0.0001",
    }
    # CIFAR's default is 1e-4: there 1e-3 is the non-default one
    cifar = _cfg(data__name="cifar10", data__lr=1e-4, optimizer__lr=1e-3, model__depth=2)
    assert make_run_name(cifar) == "cnn-cifar10-noaug-fold0-d2-lr0.001"
    assert make_run_name(_cfg(data__name="cifar10", data__lr=1e-4, optimizer__lr=1e-4)) == ("cnn-cifar10-noaug-fold0")
    # composed config: optimizer.lr interpolates data.lr (conf/optimizer/adam.yaml) -> no suffix
    dict_cfg = OmegaConf.structured(_cfg(model__name="fcn"))
    dict_cfg.optimizer.lr = "${data.lr}"
    assert make_run_name(dict_cfg) == "fcn-mnist-noaug-fold0"
    dict_cfg.optimizer.lr = 3e-4
    assert make_run_name(dict_cfg) == "fcn-mnist-noaug-fold0-lr0.0003"


def test_wandb_offline_run_without_network(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline must come from the config alone
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var, sub in {"WANDB_CACHE_DIR": "c", "WANDB_CONFIG_DIR": "cfg", "WANDB_DATA_DIR": "d"}.items():
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    cfg = OmegaConf.structured(
        LoggerConfig(names=["wandb"], wandb=WandbConfig(project="ws-test", tags=["paper", "mnist"], offline=True))
    )
    resolved = {"model": {"name": "fcn"}, "marker": "resolvedmarker17"}
    (logger,) = build_loggers(cfg, tmp_path, "fcn-mnist-translate0.1-fold0", resolved, group="2026-01-01_00-00-00")
    try:
        logger.log_metrics({"val/acc": 0.5}, step=1)
        run = logger.experiment
        assert run.offline
        assert run.name == "fcn-mnist-translate0.1-fold0"
        assert run.group == "2026-01-01_00-00-00"  # group falls back to the passed sweep name
        assert run.job_type == "train" and list(run.tags) == ["paper", "mnist"]
        assert run.config["model"] == {"name": "fcn"}
        assert os.environ.get("WANDB_MODE") is None  # no process-wide offline switch left behind
    finally:
        assert finish_wandb(teardown=True)
    assert wandb.run is None and not finish_wandb()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert b"resolvedmarker17" in data and b"val/acc" in data


def test_epoch_labels():
    assert [epoch_label(e) for e in (INIT_EPOCH, 0, 7, 123, 1000)] == ["init", "000", "007", "123", "1000"]
    with pytest.raises(ValueError, match="epochs count from 0"):
        epoch_label(-2)


def test_wandb_logger_passes_no_anonymous_setting():
    """Lightning passes ``anonymous=None`` to ``wandb.init``; wandb warns for any value given."""
    pytest.importorskip("wandb")
    logger = EpochWandbLogger(name="x", project="p", mode="offline")
    assert "anonymous" not in logger._wandb_init
    assert EpochWandbLogger(name="x", anonymous=True)._wandb_init["anonymous"] == "allow"  # asked for: kept


def wandb_records(path: Path) -> list:
    """The records of an offline run's ``run-*.wandb`` file, decoded with wandb's own protobufs.

    wandb 0.31 ships no Python reader of the file (``wandb.sdk.internal.datastore`` is gone with
    the Go core), so this reads its documented framing: a 7-byte header (``:W&B``, magic,
    version), then LevelDB log blocks of 32 KiB, each record a 7-byte header (CRC, length,
    type: 1 full, 2 first, 3 middle, 4 last) and its bytes, one protobuf ``Record`` per record.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, block, parts = [], 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # block trailer or padding
            pos += left
            continue
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def test_one_epoch_numbering_in_csv_file_names_and_wandb_offline_files(tmp_path):
    """A tiny FCN run with W&B offline: metrics.csv, filter images and W&B count epochs alike.

    metrics.csv has epochs 0, 1; the images are epoch-init, epoch-000, epoch-001; W&B plots
    every metric against ``epoch`` (define_metric), has the initial filter distances at -1
    (init) with results.json's values, each epoch's val/acc at its epoch with metrics.csv's
    value, and no test/* (k-fold: the held-out fold was validated at the last epoch already).
    """
    pytest.importorskip("wandb")
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "w"),
        "WANDB_CACHE_DIR": str(tmp_path / "c"),
        "WANDB_CONFIG_DIR": str(tmp_path / "cfg"),
        "WANDB_DATA_DIR": str(tmp_path / "d"),
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_SILENT": "false",  # the warnings must not be there, not merely hidden
        "OMP_NUM_THREADS": "1",
    }
    env.pop("WANDB_API_KEY", None)
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "model=fcn", "data=synthetic", "data.options.size=128"]
    cmd += ["model.hidden=16", "trainer.max_epochs=2", "eval=clean", "threads=1", "callbacks.progress_bar=none"]
    cmd += ["logger=wandb", "logger.wandb.offline=true", f"hydra.run.dir={run}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "anonymous" not in proc.stderr + proc.stdout

    csv_epochs = [int(r["epoch"]) for r in read_metrics_csv(run / "metrics.csv")]
    assert csv_epochs == [0, 1]
    points = [INIT_EPOCH, *csv_epochs]
    images = sorted(p.name for p in (run / "filters").glob("conv1_*.png"))
    assert images == sorted(f"conv1_f0_epoch-{epoch_label(e)}.png" for e in points)
    assert images == ["conv1_f0_epoch-000.png", "conv1_f0_epoch-001.png", "conv1_f0_epoch-init.png"]

    (wandb_file,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(wandb_file)
    metrics = [r.metric for r in records if r.WhichOneof("record_type") == "metric"]
    star = [m.step_metric for m in metrics if m.glob_name == "*"]
    assert star[-1] == "epoch"  # the last definition of '*' is the one W&B keeps
    assert any(m.name == "epoch" for m in metrics)
    history = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            history.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    assert history and all("epoch" in h for h in history)  # every value sits at an epoch
    fd = {h["epoch"]: h["fd/conv1/r1/euclid"] for h in history if "fd/conv1/r1/euclid" in h}
    assert sorted(fd) == points
    init = json.loads((run / "results.json").read_text())["init"]
    assert fd[INIT_EPOCH] == pytest.approx(init["fd/conv1/r1/euclid"], rel=1e-6)
    csv_acc = {int(r["epoch"]): r["val/acc"] for r in read_metrics_csv(run / "metrics.csv")}
    wandb_acc = {h["epoch"]: h["val/acc"] for h in history if "val/acc" in h}
    assert wandb_acc.keys() == csv_acc.keys()
    for epoch, value in csv_acc.items():
        assert wandb_acc[epoch] == pytest.approx(value, rel=1e-6)
    images = {h["epoch"]: h["filters/conv1_f0/caption"] for h in history if "filters/conv1_f0/caption" in h}
    assert images == {e: f"epoch {epoch_label(e)}" for e in points}  # each image at its epoch
    assert not any(k.startswith("test/") for h in history for k in h)  # k-fold: no separate test set


def _recording_logger() -> SimpleNamespace:
    calls: list[tuple[dict, int]] = []
    return SimpleNamespace(
        calls=calls,
        log_metrics=lambda metrics, step: calls.append((dict(metrics), step)),
        save=lambda: calls.append(("saved", None)),
    )


@pytest.mark.parametrize(
    ("split", "epoch", "expected"),
    [
        ("kfold", -1, {"val/acc": 0.75, "epoch": -1.0}),  # evaluation of the init: the held-out fold is val
        ("standard", 4, {"test/acc": 0.75, "epoch": 4.0}),  # the official test set, weights of epoch 4
    ],
)
def test_the_test_pass_is_named_for_its_data_at_the_epoch_of_its_weights(split, epoch, expected):
    from weightshare.train import _log_test_pass

    logger = _recording_logger()
    trainer = SimpleNamespace(loggers=[logger], global_step=9)
    _log_test_pass(trainer, OmegaConf.create({"data": {"split": split}}), {"acc": 0.75}, epoch)
    assert logger.calls == [(expected, 9), ("saved", None)]  # and written (the CSV logger buffers)


@pytest.mark.slow  # two runs in subprocesses (~35 s on the shared machine); the naming has unit tests above
def test_an_evaluation_only_run_logs_its_pass_at_the_checkpoints_epoch(tmp_path):
    """train=false on a checkpoint: nothing was validated in this run, so the pass is logged (val/* on k-fold)."""
    run = tmp_path / "run"
    base = [sys.executable, str(ROOT / "train.py"), "model=cnn", "data=synthetic", "data.options.size=128"]
    base += ["model.hidden=16", "eval=clean", "threads=1", "callbacks=minimal", "logger=csv", f"hydra.run.dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*base, "trainer.max_epochs=2"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    proc = subprocess.run(
        [*base, "train=false", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (csv,) = (tmp_path / "eval" / "lightning_csv").glob("version_*/metrics.csv")
    rows = pd.read_csv(csv)
    scored = rows[rows["val/acc"].notna()]
    import torch

    saved_after = torch.load(ckpt, weights_only=True)["epoch"]
    # Lightning 2.6 refreshes last.ckpt only with an improved val/acc: read which epoch it holds
    assert saved_after in (0, 1) and list(scored["epoch"]) == [saved_after]
    test = json.loads((tmp_path / "eval" / "results.json").read_text())["test"]
    assert scored["val/acc"].iloc[0] == pytest.approx(test["acc"])
    assert not any(c.startswith("test/") for c in rows.columns)  # k-fold: no test set
