"""Hydra imports every plugin package at every start: they must not pull in heavy libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("optuna", "sqlalchemy", "torch", "pytorch_lightning")


@pytest.mark.parametrize(
    "module", ["hydra_plugins.weightshare_optuna_sweeper", "hydra_plugins.weightshare_optuna_sweeper.optuna_sweeper"]
)
def test_plugin_scan_imports_nothing_heavy(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {module} loaded {out}"
