"""Shared test fixtures: paths, real-MNIST location, config composition."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MNIST_RAW = SHARED_DATA / "MNIST" / "raw"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """``../shared/data`` (holds MNIST/raw); tests needing real MNIST skip without it."""
    if not (MNIST_RAW / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {MNIST_RAW} (../shared/data beside the repository)")
    return SHARED_DATA


@pytest.fixture()
def compose() -> Callable[..., DictConfig]:
    """Compose ``conf/train.yaml`` with overrides, as the command line would (no run dir)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from weightshare.config import register_configs

    register_configs()

    def _compose(overrides: list[str] | None = None, output_dir: Path | None = None) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            over = list(overrides or [])
            if output_dir is not None:
                over.append(f"paths.output_dir={output_dir}")
            cfg = hydra_compose(config_name="train", overrides=over)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
