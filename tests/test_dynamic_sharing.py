"""Dynamic weight sharing (layers.dynamic_sharing and its callback).

References: a brute-force loop over positions for the group means, the ring filter distances
of ``metrics.filter_distance`` for "shared", and the exact shrink factor ``1 - a`` of every
pairwise difference under the global group.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from weightshare.callbacks.dynamic_sharing import DynamicSharingCallback
from weightshare.config.compose import load_config
from weightshare.errors import ConfigError
from weightshare.layers.dynamic_sharing import dynamic_share_, group_mean, share_layer_
from weightshare.layers.free_conv import FreeConv2d
from weightshare.layers.lowrank_conv import LowRankConv2d
from weightshare.layers.tiled_conv import TiledConv2d
from weightshare.metrics.filter_distance import ring_distances
from weightshare.results import read_metrics_csv

DT = torch.float64
ROOT = Path(__file__).resolve().parents[1]


def brute_group_mean(grid: torch.Tensor, radius: int) -> torch.Tensor:
    oh, ow = grid.shape[:2]
    out = torch.empty_like(grid)
    for i in range(oh):
        for j in range(ow):
            members = [grid[k, l] for k in range(oh) for l in range(ow) if max(abs(k - i), abs(l - j)) <= radius]
            out[i, j] = torch.stack(members).mean(0)
    return out


@pytest.mark.parametrize("radius", [1, 2, 5])
def test_group_mean_is_the_clipped_chebyshev_neighbourhood_mean(radius):
    torch.manual_seed(0)
    grid = torch.randn(5, 4, 3, 2, dtype=DT)
    torch.testing.assert_close(group_mean(grid, radius), brute_group_mean(grid, radius))
    torch.testing.assert_close(group_mean(grid, None), grid.mean((0, 1), keepdim=True).expand_as(grid))


def random_free(**kwargs) -> FreeConv2d:
    torch.manual_seed(1)
    layer = FreeConv2d(2, 3, 3, input_size=(9, 9), **kwargs).to(DT)  # 7x7 positions
    with torch.no_grad():
        layer.bias.normal_()
    return layer


def test_full_strength_global_group_re_shares_exactly():
    layer = random_free()
    assert ring_distances(layer.effective_kernel(), 1)["euclid"] > 0.05
    share_layer_(layer, 1.0)
    kernel = layer.effective_kernel()
    for r in (1, 2, 3):
        assert ring_distances(kernel, r)["euclid"] == pytest.approx(0.0, abs=1e-12)
    # the layer is now the convolution of the mean kernel and mean bias
    conv, spread = layer.to_conv()
    assert spread["kernel_std_max"] == pytest.approx(0.0, abs=1e-12) and spread["bias_std_max"] == pytest.approx(
        0, abs=1e-12
    )
    x = torch.randn(2, 2, 9, 9, dtype=DT)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("strength", [0.25, 0.5, 0.9])
def test_partial_strength_shrinks_every_difference_by_one_minus_a(strength):
    layer = random_free()
    before = layer.effective_kernel().detach().clone()
    share_layer_(layer, strength)
    after = layer.effective_kernel().detach()
    # W_p - W_q -> (1 - a)(W_p - W_q) for every pair (the group mean is the same for all)
    diff_before = before[1:] - before[:-1]
    torch.testing.assert_close(after[1:] - after[:-1], (1 - strength) * diff_before)
    # the ring distance (normalised by the kernel's global norm) by the predicted factor
    factor = (1 - strength) * before.norm() / after.norm()
    assert ring_distances(after, 1)["euclid"] == pytest.approx(float(factor) * ring_distances(before, 1)["euclid"])
    torch.testing.assert_close(after.mean((0, 1)), before.mean((0, 1)))  # the mean kernel does not move


def test_local_radius_against_brute_force():
    layer = random_free()
    before = layer.weight.detach().clone()
    bias = layer.bias.detach().clone()
    share_layer_(layer, 0.6, radius=1)
    torch.testing.assert_close(layer.weight, 0.4 * before + 0.6 * brute_group_mean(before, 1))
    torch.testing.assert_close(layer.bias, 0.4 * bias + 0.6 * brute_group_mean(bias, 1))


def test_weight_mask_stays_exact():
    layer = random_free(connectivity=0.5, mask_seed=3)
    removed = ~layer.mask
    assert removed.sum() > 100
    kernel = layer.effective_kernel().detach().clone()
    share_layer_(layer, 1.0)
    assert torch.all(layer.weight[removed] == 0)
    # kept weights took the group mean of the masked kernels (removed ones counted as 0)
    mean = kernel.mean((0, 1)).permute(2, 3, 1, 0)  # (kh, kw, in, out) stored layout
    expected = mean.expand_as(layer.weight)[layer.mask]
    torch.testing.assert_close(layer.weight[layer.mask], expected)


def test_input_mask_leaves_unused_weights_untouched():
    layer = random_free(connectivity=0.4, connectivity_mode="input", mask_seed=5)
    dead = ~layer.input_weight_mask().expand_as(layer.weight)
    assert dead.any() and (~dead).any()
    start = layer.weight.detach().clone()
    share_layer_(layer, 0.5)
    assert torch.equal(layer.weight[dead], start[dead])
    assert not torch.equal(layer.weight[~dead], start[~dead])


@pytest.mark.parametrize("normalize", ["softmax", "none"])
def test_lowrank_is_re_shared_through_its_combining_weights(normalize):
    torch.manual_seed(4)
    layer = LowRankConv2d(2, 3, 3, input_size=(9, 9), rank=4, normalize=normalize).to(DT)
    with torch.no_grad():
        layer.combining_logits.normal_()
        layer.bias_spatial.normal_()
    before = layer.effective_kernel().detach().clone()
    share_layer_(layer, 0.3, radius=2)
    torch.testing.assert_close(layer.effective_kernel(), 0.7 * before + 0.3 * brute_group_mean(before, 2))
    share_layer_(layer, 1.0)
    assert ring_distances(layer.effective_kernel(), 1)["euclid"] == pytest.approx(0.0, abs=1e-10)


def test_unsupported_layers_and_bad_strength():
    with pytest.raises(TypeError, match="combining='full'"):
        share_layer_(LowRankConv2d(1, 2, 3, input_size=8, rank=2, combining="factorized"), 1.0)
    with pytest.raises(TypeError, match="TiledConv2d"):
        share_layer_(TiledConv2d(1, 2, 3, input_size=8, tile=2), 1.0)
    for bad in (0.0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="strength"):
            share_layer_(FreeConv2d(1, 2, 3, input_size=8), bad)
    model = nn.Sequential(FreeConv2d(1, 2, 3, input_size=8), nn.Conv2d(2, 2, 1))
    assert dynamic_share_(model, 0.5) == 1
    for kwargs, key in (
        ({"every": 0}, "every"),
        ({"every": 2, "strength": 0}, "strength"),
        ({"every": 2, "radius": 0}, "radius"),
    ):
        with pytest.raises(ConfigError, match=f"model.dynamic_sharing.{key}"):
            DynamicSharingCallback(**kwargs)


def _train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "data=synthetic",
        "data.options.size=256",
        "data.batch_size=64",
        "model.hidden=16",
        "trainer.max_epochs=2",
        "callbacks.progress_bar=none",
        "callbacks.filter_images.enabled=false",
        "eval=clean",
        "threads=1",
        f"hydra.run.dir={tmp_path}",
        *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_training_logs_the_sharing_steps_and_global_full_strength_keeps_the_fcn_shared(tmp_path):
    # synthetic: 256 images, 4/5 train -> 205 -> 4 batches of 64 per epoch; sharing every 4 steps
    proc = _train(tmp_path, "model=fcn", "model.dynamic_sharing.every=4", "model.dynamic_sharing.strength=1.0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert [r["train/dynamic_sharing_steps"] for r in rows] == [1.0, 2.0]
    assert all(r["train/dynamic_sharing_shift"] > 0 for r in rows)
    # the last step of each epoch re-shared every layer: the ring distances measured after it are 0
    assert all(r["fd/conv1/r1/euclid"] == pytest.approx(0.0, abs=1e-6) for r in rows)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model=fcn", "model.dynamic_sharing.every=0"], "model.dynamic_sharing.every"),
        (["model=fcn", "model.dynamic_sharing.every=5", "model.dynamic_sharing.strength=0"], "strength"),
        (["model=fcn", "model.dynamic_sharing.every=5", "model.dynamic_sharing.strength=1.5"], "strength"),
        (["model=fcn", "model.dynamic_sharing.every=5", "model.dynamic_sharing.radius=13"], "radius"),
        (["model=fcn", "model.dynamic_sharing.strength=0.5"], "strength"),
        (["model=fcn", "model.dynamic_sharing.radius=2"], "radius"),
        (["model=cnn", "model.dynamic_sharing.every=5"], "model.dynamic_sharing.every"),
        (["model=fcn", "model.share_tile=2", "model.dynamic_sharing.every=5"], "model.dynamic_sharing.every"),
        (["model=lowrank", "model.combining=factorized", "model.dynamic_sharing.every=5"], "every"),
    ],
)
def test_bad_dynamic_sharing_config_is_a_one_line_error(overrides, key):
    with pytest.raises(ConfigError, match=key) as info:
        load_config(["data=synthetic", *overrides])
    assert "\n" not in str(info.value)
