"""A short training run on real MNIST: the paper's CNN must reach what it reliably reaches.

Measured with this exact config (16,384 training rows of fold 0, 4,096 validation rows,
2 epochs, 2 threads, torch 2.13.0 CPU): final val/acc 0.9688 (seed 0), 0.9707 (seed 1),
0.9717 (seed 2). The threshold is the lowest of those minus a stated margin of 0.9 points
(about 3x the spread over seeds, 37 of 4,096 images): 0.96. About 12 s of training on an
idle 2-core machine, so it stays in the default suite (skipped without real MNIST).
"""

from __future__ import annotations

from weightshare.train import train


def test_cnn_reaches_96_percent_on_real_mnist_in_two_epochs(compose, mnist_root, tmp_path) -> None:
    cfg = compose(
        [
            "model=cnn",
            f"data.root={mnist_root}",
            "data.limit_train=16384",
            "data.limit_val=4096",
            "trainer.max_epochs=2",
            "callbacks=minimal",
            "eval=clean",
            "test=false",
            "threads=2",
        ],
        output_dir=tmp_path,
    )
    value = train(cfg)
    import json

    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "completed" and res["param_count"] == 2_201_098
    assert value == res["final"]["val/acc_best"]
    assert res["epochs_completed"] == 2
    assert res["final"]["val/acc"] > 0.9688 - 0.009, res["final"]  # measured minimum minus the margin
    assert res["final"]["train/acc"] > 0.9, res["final"]
