"""Toy objective for the Optuna sweeper tests (no Lightning, no data: starts fast).

Epoch ``e`` reaches validation accuracy ``quality * (1 - 0.5 ** (e + 1))`` where
``quality`` peaks at lr = 1e-3 and depth 3, so a hopeless lr gives a low curve from the first
epoch on. Every epoch is reported to the trial; the job stops when the pruner says so, and
writes ``toy_result.json`` (params, epochs run, pruned) into its output directory.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from weightshare.trial_protocol import report_and_maybe_prune


def quality(lr: float, depth: int, model: str) -> float:
    """Final accuracy of the toy model: 0.99 at lr=1e-3, depth 3, cnn; lower elsewhere."""
    return 0.99 - 0.15 * abs(math.log10(lr) + 3.0) - 0.02 * (3 - depth) - (0.01 if model == "fcn" else 0.0)


def curve(lr: float, depth: int, model: str, epoch: int) -> float:
    return quality(lr, depth, model) * (1.0 - 0.5 ** (epoch + 1))


def objective(cfg: DictConfig) -> Any:
    lr, depth, model = float(cfg.optimizer.lr), int(cfg.model.depth), str(cfg.model.name)
    if cfg.fail_above_lr is not None and lr > float(cfg.fail_above_lr):
        raise RuntimeError(f"toy failure: lr={lr} is above {cfg.fail_above_lr}")
    metrics: dict[str, float] = {}
    epochs_run, pruned = 0, False
    for epoch in range(int(cfg.epochs)):
        time.sleep(float(cfg.sleep_s))
        acc = curve(lr, depth, model, epoch)
        metrics["val/acc"] = acc
        metrics["val/acc_best"] = max(acc, metrics.get("val/acc_best", -1.0))
        epochs_run = epoch + 1
        if report_and_maybe_prune(cfg.trial, epoch, metrics.get(cfg.trial.monitor or "val/acc")):
            pruned = True
            break
    out = Path(HydraConfig.get().runtime.output_dir)
    record = {"lr": lr, "depth": depth, "model": model, "epochs_run": epochs_run, "pruned": pruned}
    (out / "toy_result.json").write_text(json.dumps(record))
    return metrics.get(cfg.optimized_metric)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> Any:
    return objective(cfg)


if __name__ == "__main__":
    main()
