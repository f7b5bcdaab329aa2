"""Helpers of the packed-trainer tests: tiny synthetic configs, single runs, metric comparison."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from weightshare.config import register_configs
from weightshare.config.validate import MODEL_OPTION_USERS
from weightshare.results import read_json, read_metrics_csv

REPO = Path(__file__).resolve().parents[1]

#: tiny synthetic runs: 5 folds of 64 images, batch 32 (8 steps), hidden 32 (models that have it), float64
BASE = [
    "data=synthetic",
    "data.options.size=320",
    "data.batch_size=32",
    "model.hidden=32",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "trainer.precision=64-true",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=none",
    "callbacks.filter_images.enabled=false",
    "logger=none",
    "threads=1",
]


def make_cfg(out: Path, overrides: list[str]) -> DictConfig:
    model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "cnn")
    base = BASE if model in MODEL_OPTION_USERS["hidden"] else [o for o in BASE if not o.startswith("model.hidden=")]
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose(config_name="train", overrides=[*base, *overrides, f"paths.output_dir={out}"])
    finally:
        GlobalHydra.instance().clear()


def run_single(cfg: DictConfig) -> float | None:
    from weightshare.train import train

    return train(cfg)


def assert_same_runs(single: Path, packed: Path, tol: float = 1e-9) -> None:
    """metrics.csv (every column but timings) and final weights agree to ``tol``."""
    a, b = read_metrics_csv(single / "metrics.csv"), read_metrics_csv(packed / "metrics.csv")
    assert len(a) == len(b) and a, (len(a), len(b))
    skip = {"time/epoch_s", "train/images_per_s"}
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb), set(ra) ^ set(rb)
        for key in set(ra) - skip:
            assert math.isclose(ra[key], rb[key], rel_tol=tol, abs_tol=tol), (key, ra[key], rb[key])
    sa, sb = read_json(single / "results.json"), read_json(packed / "results.json")
    assert sa["status"] == sb["status"] == "completed"
    assert sa["identity"] == sb["identity"]
    for section in ("final", "best", "test", "init"):
        assert set(sa[section]) == set(sb[section]), section
        for key, value in sa[section].items():
            if key not in skip:
                assert math.isclose(value, sb[section][key], rel_tol=tol, abs_tol=tol), (section, key)
    # best.ckpt: written on each strict improvement; last.ckpt: every epoch (both engines)
    for name in ("best.ckpt", "last.ckpt"):
        ca = torch.load(single / "checkpoints" / name, weights_only=True)
        cb = torch.load(packed / "checkpoints" / name, weights_only=True)
        assert ca["epoch"] == cb["epoch"] and ca["global_step"] == cb["global_step"], name
        for key, value in ca["state_dict"].items():
            if key.startswith("net."):
                assert cb["state_dict"][key].dtype == value.dtype, key
                torch.testing.assert_close(cb["state_dict"][key], value, atol=tol, rtol=0, msg=key)


def assert_pack_equals_single_runs(tmp_path: Path, common: list[str], members: list[list[str]]) -> None:
    """Train each member as a single run and all of them as one pack: the same numbers, to 1e-9.

    Compares the objective values and, per member, every metrics.csv column and results.json
    section (:func:`assert_same_runs`); the filter images have the same names in both.
    """
    import pytest

    from weightshare.packed import train_pack

    values = [run_single(make_cfg(tmp_path / f"single{i}", [*common, *m])) for i, m in enumerate(members)]
    packed = train_pack([make_cfg(tmp_path / f"pack{i}", [*common, *m]) for i, m in enumerate(members)])
    assert packed == pytest.approx(values, rel=1e-9, abs=1e-9)
    for i in range(len(members)):
        assert_same_runs(tmp_path / f"single{i}", tmp_path / f"pack{i}")
        images = [sorted(p.name for p in (tmp_path / f"{r}{i}").glob("filters/*.png")) for r in ("single", "pack")]
        assert images[0] == images[1]
