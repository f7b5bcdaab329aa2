"""Loggers built from the logger config, the W&B run name, and offline W&B runs."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from weightshare.builders import build_loggers
from weightshare.config.schema import LoggerConfig, TrainConfig, WandbConfig
from weightshare.errors import ConfigError
from weightshare.loggers import finish_wandb, format_aug, make_run_name


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
