"""How long do the paper's sweeps take? Measure epochs, extrapolate the budgets.

For each dataset (MNIST, CIFAR-10) and model (CNN, FCN) this runs the real training path
(data module with every augmentation on, Lightning module, every evaluation variant, filter
distances for the FCN) for a limited number of batches, measures training and validation
throughput, extrapolates the time of one protocol epoch (56k/14k MNIST, 48k/12k CIFAR-10),
and from that the wall time of ``experiment=paper_translate`` at ``budget=small`` and
``budget=full`` (upper bound: every job runs to max_epochs; lower bound: every job stops at
the first chance early stopping gives, patience + 1 epochs).

CIFAR-10 is timed on random uint8 images of the real shape (the time does not depend on the
pixels). MNIST uses the real files when ``../shared/data`` is there.

    python scripts/bench_budget.py [--device cpu|cuda] [--precision 32-true|bf16-mixed] [--json out.json]

Prints JSON on stdout and a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from weightshare.builders import build_run
from weightshare.config.compose import load_config
from weightshare.data import ArrayDataset, load_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
LEVELS, MODELS, FOLDS = 11, 2, 5  # paper_translate: 11 levels x CNN/FCN x 5 folds
PROTOCOL = {"mnist": (250, 50), "cifar10": (500, 100)}  # max epochs, patience
SMALL = (10, 1)  # budget=small: 10 epochs, fold 0


class _Timer(pl.Callback):
    """Wall time of the training batches and of the validation loop, with image counts."""

    def __init__(self) -> None:
        self.train_s = self.val_s = 0.0
        self.train_n = self.val_n = 0
        self._t = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_s += time.perf_counter() - self._t
        self.train_n += int(batch[1].shape[0])

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._t = time.perf_counter()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.val_n += int(batch["y"].shape[0])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self.val_s += time.perf_counter() - self._t


def _dataset(name: str) -> ArrayDataset:
    if name == "mnist" and (SHARED / "MNIST" / "raw").is_dir():
        return load_dataset("mnist", SHARED)
    shape = {"mnist": (70000, 1, 28, 28), "cifar10": (60000, 3, 32, 32)}[name]
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (shape[0],), generator=g)
    return ArrayDataset(name, images, labels, n_train=shape[0] - 10000, num_classes=10)


def measure(data: str, model: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cfg = load_config(
        [
            f"data={data}",
            f"model={model}",
            "aug.translate=0.3",
            "callbacks=minimal",
            "callbacks.checkpoint.enabled=false",
            "logger=none",
            f"paths.output_dir={out}",
            f"trainer.precision={args.precision}",
        ]
    )
    ds = _dataset(data)
    timer = _Timer()
    run = build_run(
        cfg,
        out,
        dataset=ds,
        loggers=False,
        extra_callbacks=[timer],
        accelerator=args.device,
        devices=1,
        max_epochs=args.epochs,
        limit_train_batches=args.train_batches,
        limit_val_batches=args.val_batches,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    dm, module = run.datamodule, run.module
    run.trainer.fit(module, datamodule=dm)
    train_ips = timer.train_n / timer.train_s
    val_ips = timer.val_n / timer.val_s
    n_train, n_val = len(dm.train_idx), len(dm.val_idx)
    epoch_s = n_train / train_ips + n_val / val_ips
    max_epochs, patience = PROTOCOL[data]
    return {
        "data": data,
        "model": model,
        "params": module.param_count,
        "train_images_per_s": round(train_ips, 1),
        "val_images_per_s_all_variants": round(val_ips, 1),
        "epoch_s": round(epoch_s, 2),
        "small_job_h": round(epoch_s * SMALL[0] / 3600, 3),
        "full_job_h_max": round(epoch_s * max_epochs / 3600, 2),
        "full_job_h_min": round(epoch_s * (patience + 1) / 3600, 2),
    }


def main() -> None:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs (the first warms up)")
    parser.add_argument("--train-batches", type=int, default=30)
    parser.add_argument("--val-batches", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path("/tmp/weightshare-bench-budget")
    rows = [measure(d, m, args, out / f"{d}-{m}") for d in ("mnist", "cifar10") for m in ("cnn", "fcn")]
    sweep = {}
    for data in ("mnist", "cifar10"):
        per = [r for r in rows if r["data"] == data]
        per_model_small = sum(r["small_job_h"] for r in per)  # one job of each model
        sweep[data] = {
            "jobs_full": LEVELS * MODELS * FOLDS,
            "small_h": round(per_model_small * LEVELS * SMALL[1], 2),
            "full_h_max": round(sum(r["full_job_h_max"] for r in per) * LEVELS * FOLDS, 1),
            "full_h_min": round(sum(r["full_job_h_min"] for r in per) * LEVELS * FOLDS, 1),
        }
    result = {
        "device": args.device,
        "precision": args.precision,
        "threads": args.threads,
        "torch": torch.__version__,
        "measured": rows,
        "paper_translate": sweep,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    cols = [
        "data",
        "model",
        "params",
        "train_images_per_s",
        "val_images_per_s_all_variants",
        "epoch_s",
        "small_job_h",
        "full_job_h_min",
        "full_job_h_max",
    ]
    print(" | ".join(cols), file=sys.stderr)
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols), file=sys.stderr)
    for data, s in sweep.items():
        print(
            f"paper_translate {data}: small {s['small_h']} h, full {s['full_h_min']}-{s['full_h_max']} h "
            f"({s['jobs_full']} jobs, one process)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
