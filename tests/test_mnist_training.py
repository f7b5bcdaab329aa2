"""A short training run on real MNIST: the paper's CNN must clear 95% validation accuracy."""

from __future__ import annotations

from weightshare.train import train


def test_cnn_passes_95_percent_on_real_mnist(compose, mnist_root, tmp_path) -> None:
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
    assert res["final"]["val/acc"] > 0.95, res["final"]
