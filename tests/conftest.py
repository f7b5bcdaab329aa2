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


def _mount_tmpfs(target: Path, options: str) -> bool:
    import subprocess

    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    return proc.returncode == 0


def _umount(target: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture()
def small_tmpfs(tmp_path: Path):
    """``make(size_kib) -> Path``: a real, small tmpfs (a disk that fills up); skips where mount is not allowed."""
    mounted: list[Path] = []

    def make(size_kib: int, name: str = "disk") -> Path:
        target = tmp_path / name
        if not _mount_tmpfs(target, f"size={size_kib}k"):
            pytest.skip("mounting a tmpfs needs root (mount -t tmpfs): the injected-ENOSPC tests cover this")
        mounted.append(target)
        return target

    yield make
    for target in mounted:
        _umount(target)


@pytest.fixture()
def read_only_dir(tmp_path: Path):
    """A directory nothing can be written into: a read-only tmpfs as root, else chmod 0555."""
    target = tmp_path / "read_only"
    if os.geteuid() == 0:
        if not _mount_tmpfs(target, "ro,size=64k"):
            pytest.skip("root here cannot mount a read-only tmpfs, and chmod does not stop root")
        yield target
        _umount(target)
    else:
        target.mkdir()
        target.chmod(0o555)
        yield target
        target.chmod(0o755)
