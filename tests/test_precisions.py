"""Every ``trainer.precision`` the schema allows trains the paper's CNN and FCN.

A "-true" precision holds the weights in its dtype, so the data module must hand the network
batches of that dtype (float64 for 64-true, which the packed trainer's exactness tests use);
a "-mixed" precision keeps float32 weights and batches and autocasts.
"""

from __future__ import annotations

import math

import pytest
import torch

from weightshare.builders import build_run
from weightshare.data.datamodule import PRECISION_BATCH_DTYPES, PRECISIONS

WEIGHT_DTYPE = {"64-true": torch.float64, "64": torch.float64, "bf16-true": torch.bfloat16, "16-true": torch.float16}


@pytest.mark.parametrize("model", ["cnn", "fcn"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_trains_one_epoch(compose, tmp_path, precision: str, model: str) -> None:
    cfg = compose(
        [
            "data=synthetic",
            "data.options.size=96",
            "data.batch_size=32",
            f"model={model}",
            "model.hidden=32",
            f"trainer.precision={precision}",
            "trainer.max_epochs=1",
            "callbacks=minimal",
            "callbacks.checkpoint.enabled=false",
            "eval=clean",
            "logger=none",
            "threads=1",
        ],
        output_dir=tmp_path,
    )
    seen: list[torch.dtype] = []
    run = build_run(cfg, tmp_path, loggers=False)
    original = run.datamodule.on_after_batch_transfer

    def spy(batch, dataloader_idx):
        out = original(batch, dataloader_idx)
        seen.append(out[0].dtype if isinstance(out, tuple) else out["x"]["clean"].dtype)
        return out

    run.datamodule.on_after_batch_transfer = spy
    before = run.module.net.conv1.weight.detach().double().clone()
    run.trainer.fit(run.module, datamodule=run.datamodule)
    want = WEIGHT_DTYPE.get(precision, torch.float32)
    assert run.module.net.fc2.weight.dtype == want
    assert set(seen) == {PRECISION_BATCH_DTYPES[precision]} == {want}
    assert math.isfinite(float(run.trainer.callback_metrics["train/loss"]))
    # it trained: every optimiser step moved the first layer (Adam's first step is ~lr per weight)
    moved = (run.module.net.conv1.weight.detach().double() - before).abs()
    assert float(moved.mean()) > 0.5 * cfg.optimizer.lr
    assert 0.0 <= float(run.trainer.callback_metrics["val/acc"]) <= 1.0
