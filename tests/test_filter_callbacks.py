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
    def __init__(self, free: bool = True, cin: int = 1, lr: float = 0.5):
        super().__init__()
        self.lr = lr
        self.net = TinyNet(free, cin)
        g = torch.Generator().manual_seed(0)
        self.data = TensorDataset(torch.rand(32, cin, 9, 9, generator=g), torch.randint(0, 2, (32,), generator=g))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=16)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def reference_metrics(kernel: torch.Tensor, radii: tuple[int, ...] = (1, 2), layer: str = "conv1") -> dict[str, float]:
    """The filter distances of a ``(out_h, out_w, *block)`` kernel by plain loops over positions.

    Written from the definition in docs/protocol.md (kernel divided by its global Frobenius
    norm; mean over centre positions and their ring at Chebyshev distance r; to_mean: mean over
    positions of the distance to the mean block), independently of weightshare.metrics.
    """
    k = kernel.detach().double().numpy()
    h, w = k.shape[:2]
    blocks = k.reshape(h, w, -1) / np.linalg.norm(k)

    def cos_dist(a: np.ndarray, b: np.ndarray) -> float:
        return 1.0 - float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))

    out: dict[str, float] = {}
    for r in radii:
        eu, co = [], []
        for i in range(r, h - r):
            for j in range(r, w - r):
                for di in range(-r, r + 1):
                    for dj in range(-r, r + 1):
                        if max(abs(di), abs(dj)) != r:
                            continue
                        a, b = blocks[i, j], blocks[i + di, j + dj]
                        eu.append(np.linalg.norm(a - b))
                        co.append(cos_dist(a, b))
        out[f"fd/{layer}/r{r}/euclid"], out[f"fd/{layer}/r{r}/cosine"] = float(np.mean(eu)), float(np.mean(co))
    flat = blocks.reshape(h * w, -1)
    mean = flat.mean(axis=0)
    out[f"fd/{layer}/to_mean/euclid"] = float(np.mean([np.linalg.norm(b - mean) for b in flat]))
    out[f"fd/{layer}/to_mean/cosine"] = float(np.mean([cos_dist(b, mean) for b in flat]))
    return out


def striped_kernel(scale: float = 2.0) -> torch.Tensor:
    """7x7 positions of (3, 1, 3, 3) blocks: column j even holds ``scale * e0``, odd ``scale * e1``.

    Hand-computed distances (normalised by the global norm ``7 * scale``; a, b orthogonal):
    ring 1: 6 of 8 neighbours lie in a column of the other parity, each sqrt(2)/7 away and
    orthogonal -> euclid 3*sqrt(2)/28, cosine 3/4. Ring 2: 4 of 16 (dx = +-1, dy = +-2) ->
    euclid sqrt(2)/28, cosine 1/4. To the mean block (28 a's, 21 b's: m = (4a + 3b)/7, |m| = 5/7):
    |a - m| = 3*sqrt(2)/7, |b - m| = 4*sqrt(2)/7 -> euclid 24*sqrt(2)/343; cos(a, m) = 4/5,
    cos(b, m) = 3/5 -> cosine (28 * 0.2 + 21 * 0.4) / 49 = 2/7.
    """
    kernel = torch.zeros(7, 7, 3, 1, 3, 3)
    flat = kernel.view(7, 7, -1)
    flat[:, 0::2, 0] = scale
    flat[:, 1::2, 1] = scale
    return kernel


STRIPED = {
    "fd/conv1/r1/euclid": 3 * math.sqrt(2) / 28,
    "fd/conv1/r1/cosine": 0.75,
    "fd/conv1/r2/euclid": math.sqrt(2) / 28,
    "fd/conv1/r2/cosine": 0.25,
    "fd/conv1/to_mean/euclid": 24 * math.sqrt(2) / 343,
    "fd/conv1/to_mean/cosine": 2 / 7,
}


def test_reference_loop_on_the_hand_made_kernel() -> None:
    ref = reference_metrics(striped_kernel())
    assert ref.keys() == STRIPED.keys()
    for key, value in STRIPED.items():
        assert ref[key] == pytest.approx(value, abs=1e-12), key


class Probe(pl.Callback):
    """Runs after the callback under test: records callback_metrics and recomputes by loops."""

    def __init__(self):
        self.seen: list[dict[str, float]] = []
        self.expected: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("fd/")})
        self.expected.append(reference_metrics(pl_module.net.conv1.weight, radii=(1, 2)))


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
    init_expected = reference_metrics(copy.deepcopy(module.net.conv1.weight), radii=(1, 2))
    cb, probe = FilterDistanceCallback(radii=[1, 2]), Probe()
    logger = CSVLogger(str(tmp_path), name="csv")
    _trainer(tmp_path, [cb, probe], 3, logger=logger).fit(module)

    assert set(cb.init_metrics) == {f"fd/conv1/{p}/{s}" for p in ("r1", "r2", "to_mean") for s in ("euclid", "cosine")}
    for key, value in init_expected.items():
        assert cb.init_metrics[key] == pytest.approx(value, rel=1e-5)
    # each epoch the logged values are the distances of that epoch's weights (and they move)
    assert len(probe.seen) == 3
    for seen, expected in zip(probe.seen, probe.expected):
        assert seen.keys() == expected.keys()
        for key in expected:
            assert seen[key] == pytest.approx(expected[key], rel=1e-5)
    assert probe.seen[-1]["fd/conv1/r1/euclid"] != pytest.approx(init_expected["fd/conv1/r1/euclid"], rel=1e-4)
    # init values went to the logger at step 0, as the init point of the epoch axis (-1)
    df = pd.read_csv(Path(logger.log_dir) / "metrics.csv")
    row0 = df[df["step"] == 0].dropna(axis=1).iloc[0]
    assert row0["fd/conv1/r1/euclid"] == pytest.approx(init_expected["fd/conv1/r1/euclid"], rel=1e-5)
    assert row0["epoch"] == -1
    assert sorted(df.loc[df["fd/conv1/r1/euclid"].notna(), "epoch"].astype(int)) == [-1, 0, 1, 2]
    assert df["fd/conv1/r2/cosine"].notna().sum() == 4  # init + 3 epochs


def test_distance_callback_logs_the_hand_computed_distances_of_a_known_kernel(tmp_path):
    """A striped kernel (known distances, see :func:`striped_kernel`) held fixed by lr=0."""
    module = TinyModule(lr=0.0)
    with torch.no_grad():
        module.net.conv1.weight.copy_(striped_kernel())
    cb = FilterDistanceCallback(radii=[1, 2])
    seen: list[dict[str, float]] = []

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("fd/")})

    _trainer(tmp_path, [cb, Record()], 2).fit(module)
    assert torch.equal(module.net.conv1.weight.detach(), striped_kernel())  # lr=0 kept it
    assert cb.init_metrics.keys() == STRIPED.keys()
    assert len(seen) == 2
    for values in (cb.init_metrics, *seen):
        assert values.keys() == STRIPED.keys()
        for key, expected in STRIPED.items():
            assert values[key] == pytest.approx(expected, rel=1e-6), key


def test_distance_callback_every_n_epochs(tmp_path):
    module = TinyModule()
    cb = FilterDistanceCallback(radii=[1], every_n_epochs=2)
    logger = CSVLogger(str(tmp_path), name="csv")
    _trainer(tmp_path, [cb], 5, logger=logger).fit(module)
    df = pd.read_csv(Path(logger.log_dir) / "metrics.csv")
    logged = df[df["fd/conv1/r1/euclid"].notna()]
    assert sorted(logged["epoch"].astype(int)) == [-1, 1, 3]  # init, then every 2nd epoch (the 2nd is epoch 1)
    assert (logged["step"] == 0).sum() == 1  # the init row
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
    # the one epoch numbering: init, then epochs from 0; the end of training is epoch 2, the last
    assert names == ["conv1_f2_epoch-001.png", "conv1_f2_epoch-002.png", "conv1_f2_epoch-init.png"]
    for name in names:
        _check_png(tmp_path / "filters" / name)
    tb.experiment.flush()
    acc = EventAccumulator(tb.log_dir, size_guidance={"images": 0})
    acc.Reload()
    images = acc.Images("filters/conv1_f2")
    assert len(images) == 3
    assert [e.step for e in images] == [0, 4, 6]  # init, after epoch 1 (2 batches/epoch), end
    assert images[0].width > 200 and images[0].height > 200


def test_the_last_image_is_named_by_its_epoch_and_drawn_once(tmp_path):
    """Training ends after a listed epoch: no second image; early stop: named by the epoch it stopped after."""
    cb = FilterImageCallback(epochs=[0, 1], last=True, filter_index=0, out_dir=tmp_path / "a")
    _trainer(tmp_path, [cb], 2).fit(TinyModule())
    assert [p.name for p in cb.saved] == ["conv1_f0_epoch-000.png", "conv1_f0_epoch-001.png"]

    class StopAfter(pl.Callback):  # stop after epoch 2 of 10, as early stopping would
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = trainer.current_epoch >= 2

    cb = FilterImageCallback(epochs=[-1], last=True, filter_index=0, out_dir=tmp_path / "b")
    _trainer(tmp_path, [cb, StopAfter()], 10).fit(TinyModule())
    assert [p.name for p in cb.saved] == ["conv1_f0_epoch-init.png", "conv1_f0_epoch-002.png"]
    assert cb.path_of("conv1", 1234).name == "conv1_f0_epoch-1234.png"


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
    paths = FilterImageCallback(epochs=[0], filter_index=1, out_dir=tmp_path).draw(trainer, module, 0)
    assert [p.name for p in paths] == ["conv1_f1_epoch-000.png"]
    expected = (layer.weight * layer.mask).permute(0, 1, 5, 4, 2, 3).detach()
    assert len(seen) == 1 and torch.equal(seen[0], expected)
    assert seen[0].abs().max() < 1.0  # the 7.0s are gone (Glorot limit here is about 0.47)
