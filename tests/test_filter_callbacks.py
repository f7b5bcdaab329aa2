"""FilterDistanceCallback and FilterImageCallback inside real (tiny, CPU) Lightning fits."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from weightshare.callbacks.filter_images import FilterImageCallback, filter_mosaic
from weightshare.callbacks.filter_metrics import FilterDistanceCallback
from weightshare.errors import ConfigError
from weightshare.metrics import layer_filter_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class LocallyConnected(nn.Module):
    """Minimal free conv (stride 1, no padding) with the kernel_view() layout of FreeConv2d."""

    def __init__(self, cin: int, cout: int, k: int, size: int):
        super().__init__()
        self.k, self.o = k, size - k + 1
        self.weight = nn.Parameter(torch.randn(self.o, self.o, cout, cin, k, k) * 0.3)

    def kernel_view(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cols = F.unfold(x, self.k).view(x.shape[0], x.shape[1], self.k, self.k, self.o, self.o)
        return torch.einsum("bcklij,ijockl->boij", cols, self.weight)


class TinyNet(nn.Module):
    def __init__(self, free: bool = True, cin: int = 1):
        super().__init__()
        self.conv1 = LocallyConnected(cin, 3, 3, 9) if free else nn.Conv2d(cin, 3, 3)
        self.fc1 = nn.Linear(3 * 7 * 7, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(torch.relu(self.conv1(x)).flatten(1))


class TinyModule(pl.LightningModule):
    def __init__(self, free: bool = True, cin: int = 1):
        super().__init__()
        self.net = TinyNet(free, cin)
        g = torch.Generator().manual_seed(0)
        self.data = TensorDataset(torch.rand(32, cin, 9, 9, generator=g), torch.randint(0, 2, (32,), generator=g))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=16)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class Probe(pl.Callback):
    """Runs after the callback under test: records callback_metrics and recomputes independently."""

    def __init__(self):
        self.seen: list[dict[str, float]] = []
        self.expected: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("fd/")})
        self.expected.append(layer_filter_metrics(pl_module.net, radii=(1, 2)))


def _trainer(tmp_path: Path, callbacks, epochs: int, logger=None, **kw) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        num_sanity_val_steps=0,
        **kw,
    )


def test_locally_connected_helper_matches_loop():
    # the test model's forward must itself be right for the fits below to mean anything
    layer = LocallyConnected(2, 3, 3, 5)
    x = torch.randn(2, 2, 5, 5)
    y = layer(x)
    i, j = 1, 2
    ref = torch.einsum("bckl,ockl->bo", x[:, :, i : i + 3, j : j + 3], layer.weight[i, j])
    assert torch.allclose(y[:, :, i, j], ref, atol=1e-5)


def test_distance_callback_init_and_every_epoch(tmp_path):
    torch.manual_seed(0)
    module = TinyModule()
    init_expected = layer_filter_metrics(copy.deepcopy(module.net), radii=(1, 2))
    cb, probe = FilterDistanceCallback(radii=[1, 2]), Probe()
    logger = CSVLogger(str(tmp_path), name="csv")
    _trainer(tmp_path, [cb, probe], 3, logger=logger).fit(module)

    assert set(cb.init_metrics) == {f"fd/conv1/{p}/{s}" for p in ("r1", "r2", "to_mean") for s in ("euclid", "cosine")}
    for key, value in init_expected.items():
        assert cb.init_metrics[key] == pytest.approx(value, rel=1e-6)
    # each epoch the logged values are the distances of that epoch's weights (and they move)
    assert len(probe.seen) == 3
    for seen, expected in zip(probe.seen, probe.expected):
        assert seen.keys() == expected.keys()
        for key in expected:
            assert seen[key] == pytest.approx(expected[key], rel=1e-6)
    assert probe.seen[-1]["fd/conv1/r1/euclid"] != pytest.approx(init_expected["fd/conv1/r1/euclid"], rel=1e-4)
    # init values went to the logger at step 0
    df = pd.read_csv(Path(logger.log_dir) / "metrics.csv")
    row0 = df[df["step"] == 0].dropna(axis=1).iloc[0]
    assert row0["fd/conv1/r1/euclid"] == pytest.approx(init_expected["fd/conv1/r1/euclid"], rel=1e-6)
    assert df["fd/conv1/r2/cosine"].notna().sum() == 4  # init + 3 epochs


def test_distance_callback_every_n_epochs(tmp_path):
    module = TinyModule()
    cb = FilterDistanceCallback(radii=[1], every_n_epochs=2)
    logger = CSVLogger(str(tmp_path), name="csv")
    _trainer(tmp_path, [cb], 5, logger=logger).fit(module)
    df = pd.read_csv(Path(logger.log_dir) / "metrics.csv")
    logged = df[df["fd/conv1/r1/euclid"].notna()]
    assert sorted(logged["epoch"].dropna().astype(int)) == [1, 3]  # epochs 2 and 4 (1-based)
    assert (logged["step"] == 0).sum() == 1  # plus the init row
    with pytest.raises(ConfigError, match="every_n_epochs"):
        FilterDistanceCallback(every_n_epochs=0)
    with pytest.raises(ConfigError, match="radii"):
        FilterDistanceCallback(radii=[0])


def test_distance_callback_noop_for_cnn(tmp_path):
    cb = FilterDistanceCallback(radii=[1, 4])
    trainer = _trainer(tmp_path, [cb], 1, logger=CSVLogger(str(tmp_path), name="csv"))
    trainer.fit(TinyModule(free=False))
    assert cb.init_metrics == {}
    assert not any(k.startswith("fd/") for k in trainer.callback_metrics)


def test_distance_callback_resume_keeps_init_metrics(tmp_path):
    module = TinyModule()
    cb = FilterDistanceCallback(radii=[1])
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    _trainer(tmp_path, [cb, ckpt], 2).fit(module)
    first_init = dict(cb.init_metrics)
    trained = layer_filter_metrics(module.net, radii=(1,))
    assert trained["fd/conv1/r1/euclid"] != pytest.approx(first_init["fd/conv1/r1/euclid"], rel=1e-4)

    cb2 = FilterDistanceCallback(radii=[1])
    _trainer(tmp_path, [cb2], 3).fit(TinyModule(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert cb2.init_metrics == first_init


def test_filter_mosaic_layout():
    kernel = torch.arange(2 * 3 * 2 * 1 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 1, 2, 2)
    mosaic = filter_mosaic(kernel, filter_index=1)
    assert mosaic.shape == (2 * 3 - 1, 3 * 3 - 1)
    scale = float(kernel[:, :, 1].abs().max())
    # tile (i, j) sits at rows 3i..3i+1, cols 3j..3j+1; gutters are NaN
    np.testing.assert_allclose(mosaic[3:5, 6:8], kernel[1, 2, 1, 0].numpy() / scale)
    np.testing.assert_allclose(mosaic[0:2, 3:5], kernel[0, 1, 1, 0].numpy() / scale)
    assert np.isnan(mosaic[2]).all() and np.isnan(mosaic[:, 2]).all() and np.isnan(mosaic[:, 5]).all()
    rgb = filter_mosaic(torch.randn(4, 4, 2, 3, 5, 5), 0)
    assert rgb.shape == (4 * 6 - 1, 4 * 6 - 1, 3)
    assert np.nanmax(np.abs(rgb)) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="filter_index"):
        filter_mosaic(kernel, 2)


def _check_png(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert 200 <= img.shape[0] <= 2000 and 200 <= img.shape[1] <= 2000
    assert img[..., :3].std() > 0.01  # not a blank canvas
    return img.shape[:2]


@pytest.mark.parametrize("cin", [1, 3])
def test_filter_images_saved_and_logged_to_tensorboard(tmp_path, cin):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cb = FilterImageCallback(epochs=[-1, 1], last=True, filter_index=2, layers=None, out_dir=tmp_path)
    tb = TensorBoardLogger(str(tmp_path), name="tb", default_hp_metric=False)
    _trainer(tmp_path, [cb], 3, logger=tb).fit(TinyModule(cin=cin))
    names = sorted(p.name for p in (tmp_path / "filters").iterdir())
    assert names == ["conv1_f2_epoch1.png", "conv1_f2_epochinit.png", "conv1_f2_epochlast.png"]
    for name in names:
        _check_png(tmp_path / "filters" / name)
    tb.experiment.flush()
    acc = EventAccumulator(tb.log_dir, size_guidance={"images": 0})
    acc.Reload()
    images = acc.Images("filters/conv1_f2")
    assert len(images) == 3
    assert [e.step for e in images] == [0, 4, 6]  # init, after epoch 1 (2 batches/epoch), end
    assert images[0].width > 200 and images[0].height > 200


def test_filter_images_noop_for_cnn_and_bad_args(tmp_path):
    cb = FilterImageCallback(epochs=[-1, 0], last=True, filter_index=0, layers=None, out_dir=tmp_path)
    _trainer(tmp_path, [cb], 1).fit(TinyModule(free=False))
    assert not (tmp_path / "filters").exists() or not any((tmp_path / "filters").iterdir())
    with pytest.raises(ConfigError, match="epochs"):
        FilterImageCallback(epochs=[-2], last=False, filter_index=0, layers=None, out_dir=tmp_path)


def test_wandb_offline_fit_logs_metrics_and_images(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from types import SimpleNamespace

    from weightshare.builders import build_loggers
    from weightshare.loggers import finish_wandb

    for var, val in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp_path),
        "WANDB_CACHE_DIR": str(tmp_path / "c"),
        "WANDB_CONFIG_DIR": str(tmp_path / "cfg"),
        "WANDB_DATA_DIR": str(tmp_path / "d"),
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
    }.items():
        monkeypatch.setenv(var, val)
    wcfg = SimpleNamespace(
        project="ws-test",
        entity=None,
        group="sweepA",
        tags=["t"],
        job_type="train",
        offline=True,
        log_model=False,
    )
    loggers = build_loggers(
        SimpleNamespace(names=["csv", "wandb"], wandb=wcfg), tmp_path, "fcn-tiny", {"marker": "cfgmarker42"}
    )
    try:
        cbs = [FilterDistanceCallback(radii=[1]), FilterImageCallback([0], False, 0, None, tmp_path)]
        _trainer(tmp_path, cbs, 1, logger=loggers).fit(TinyModule())
        run = loggers[1].experiment
        assert run.group == "sweepA" and run.name == "fcn-tiny"
        assert math.isfinite(run.summary["fd/conv1/r1/euclid"])
    finally:
        assert finish_wandb(teardown=True)  # teardown: the offline file is complete on return
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert b"cfgmarker42" in next(run_dir.glob("run-*.wandb")).read_bytes()
    media = list(run_dir.glob("files/media/images/filters/conv1_f0*.png"))
    assert len(media) == 1 and media[0].read_bytes()[:8] == PNG_MAGIC


def test_filter_images_draw_the_masked_kernel(tmp_path, monkeypatch):
    """The image of a FreeConv2d with connectivity shows removed weights as 0, whatever is stored."""
    from types import SimpleNamespace

    import weightshare.callbacks.filter_images as fi
    from weightshare.layers import FreeConv2d

    layer = FreeConv2d(1, 2, 3, input_size=(6, 6), connectivity=0.5, mask_seed=0)
    with torch.no_grad():
        layer.weight[~layer.mask] = 7.0  # garbage the layer never computes with
    seen: list[torch.Tensor] = []

    def spy(kernel: torch.Tensor, filter_index: int) -> np.ndarray:
        seen.append(kernel.detach().clone())
        return filter_mosaic(kernel, filter_index)

    monkeypatch.setattr(fi, "filter_mosaic", spy)
    module = SimpleNamespace(net=nn.ModuleDict({"conv1": layer}))
    trainer = SimpleNamespace(is_global_zero=True, global_step=0, loggers=[])
    paths = FilterImageCallback(epochs=[0], filter_index=1, out_dir=tmp_path).draw(trainer, module, "0")
    assert [p.name for p in paths] == ["conv1_f1_epoch0.png"]
    expected = (layer.weight * layer.mask).permute(0, 1, 5, 4, 2, 3).detach()
    assert len(seen) == 1 and torch.equal(seen[0], expected)
    assert seen[0].abs().max() < 1.0  # the 7.0s are gone (Glorot limit here is about 0.47)
