"""Low-rank locally connected layer (layers.lowrank_conv), checked against independent references.

R = 1 against ``nn.Conv2d``, R = positions with one-hot combining weights against the FCN
(``FreeConv2d``), the effective kernel against a per-position loop of ``F.conv2d``, and the
parameter counts against hand-computed sums.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from weightshare.data.dataset import DataInfo
from weightshare.errors import ConfigError
from weightshare.layers.free_conv import FreeConv2d, free_conv2d
from weightshare.layers.lowrank_conv import LowRankConv2d
from weightshare.metrics.filter_distance import free_layers, layer_filter_metrics
from weightshare.models.paper_nets import PaperNet, count_parameters

DT = torch.float64
MNIST = DataInfo("mnist", 1, 28, 28, 10)
CIFAR = DataInfo("cifar10", 3, 32, 32, 10)


def test_rank_one_is_the_convolution_of_the_same_kernel():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1).to(DT)
    layer = LowRankConv2d(3, 5, 3, 2, 1, input_size=(11, 9), rank=1, spatial_bias=False).to(DT)
    with torch.no_grad():
        layer.bases[0].copy_(conv.weight)
        layer.bias.copy_(conv.bias)
        layer.combining_logits.normal_()  # softmax over one basis is 1 whatever the logit
    x = torch.randn(4, 3, 11, 9, dtype=DT)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-12, atol=1e-12)
    # with the paper's spatial bias (zero at init) it is still the convolution at init
    with_spatial = LowRankConv2d(3, 5, 3, 2, 1, input_size=(11, 9), rank=1).to(DT)
    with torch.no_grad():
        with_spatial.bases[0].copy_(conv.weight)
        with_spatial.bias.copy_(conv.bias)
    torch.testing.assert_close(with_spatial(x), conv(x), rtol=1e-12, atol=1e-12)


def test_one_hot_combining_over_every_position_is_the_fcn():
    torch.manual_seed(1)
    free = FreeConv2d(2, 3, 3, stride=1, input_size=(6, 5), bias=False).to(DT)  # 4x3 = 12 positions
    oh, ow = free.output_size
    layer = LowRankConv2d(2, 3, 3, input_size=(6, 5), rank=oh * ow, normalize="none", bias=False).to(DT)
    with torch.no_grad():
        layer.bases.copy_(free.kernel_view().reshape(oh * ow, 3, 2, 3, 3))  # basis r = position r's kernel
        layer.combining_logits.copy_(torch.eye(oh * ow, dtype=DT).reshape(oh, ow, oh * ow))
    x = torch.randn(3, 2, 6, 5, dtype=DT)
    torch.testing.assert_close(layer(x), free(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.effective_kernel(), free.kernel_view())
    # with biases: the FCN's per-position bias of the form filter + spatial term
    free_b = FreeConv2d(2, 3, 3, input_size=(6, 5)).to(DT)
    layer_b = LowRankConv2d(2, 3, 3, input_size=(6, 5), rank=oh * ow, normalize="none").to(DT)
    with torch.no_grad():
        free_b.kernel_view().copy_(free.kernel_view())
        layer_b.bases.copy_(layer.bases)
        layer_b.combining_logits.copy_(layer.combining_logits)
        layer_b.bias.normal_()
        layer_b.bias_spatial.normal_()
        free_b.bias.copy_(layer_b.bias[None, None, :] + layer_b.bias_spatial[:, :, None])
    torch.testing.assert_close(layer_b(x), free_b(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer_b.bias_view(), free_b.bias_view())


@pytest.mark.parametrize("combining", ["full", "factorized"])
@pytest.mark.parametrize("normalize", ["softmax", "norm", "none"])
def test_effective_kernel_computes_the_layer(combining, normalize):
    """The forward pass equals the FCN of the effective kernel and bias, and a per-position loop."""
    torch.manual_seed(2)
    layer = LowRankConv2d(
        2, 4, 3, stride=2, padding=1, input_size=(9, 8), rank=3, combining=combining, normalize=normalize
    ).to(DT)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(2, 2, 9, 8, dtype=DT)
    kernel, bias = layer.effective_kernel(), layer.bias_view()
    assert kernel.shape == (*layer.output_size, 4, 2, 3, 3) and bias.shape == (*layer.output_size, 4)
    y = layer(x)
    torch.testing.assert_close(y, free_conv2d(x, kernel, bias, 2, 1), rtol=1e-10, atol=1e-10)
    # independent reference: position (i, j) is F.conv2d with sum_r a_r(i, j) K_r read at (i, j)
    a = layer.combining_weights()
    if normalize == "softmax":
        torch.testing.assert_close(a.sum(-1), torch.ones(*layer.output_size, dtype=DT))
    if combining == "factorized":  # the logits are a row term plus a column term
        torch.testing.assert_close(layer.logits(), layer.combining_row[:, None] + layer.combining_col[None, :])
    for i in range(layer.output_size[0]):
        for j in range(layer.output_size[1]):
            k = sum(a[i, j, r] * layer.bases[r] for r in range(3))
            full = F.conv2d(x, k, bias[i, j], stride=2, padding=1)
            torch.testing.assert_close(y[:, :, i, j], full[:, :, i, j], rtol=1e-10, atol=1e-10)


def test_same_padding_with_an_even_kernel():
    torch.manual_seed(3)
    layer = LowRankConv2d(2, 3, (3, 4), padding="same", input_size=(7, 6), rank=2).to(DT)
    with torch.no_grad():
        layer.combining_logits.normal_()
    x = torch.randn(2, 2, 7, 6, dtype=DT)
    torch.testing.assert_close(
        layer(x), free_conv2d(x, layer.effective_kernel(), layer.bias_view(), padding="same"), rtol=1e-10, atol=1e-10
    )


def test_init_starts_as_a_convolution_with_the_mean_basis():
    torch.manual_seed(4)
    for combining in ("full", "factorized"):
        layer = LowRankConv2d(1, 32, 3, stride=2, input_size=28, rank=4, combining=combining)
        torch.testing.assert_close(layer.combining_weights(), torch.full((13, 13, 4), 0.25))
        kernel = layer.effective_kernel()
        torch.testing.assert_close(kernel, layer.bases.mean(0).expand_as(kernel))
        assert layer.bases.abs().max() <= (6 / (9 + 288)) ** 0.5  # Glorot, the CNN's fans
        assert torch.count_nonzero(layer.bias_view()) == 0
    assert layer_filter_metrics(nn.Sequential(layer), radii=[1])["fd/0/r1/euclid"] == pytest.approx(0, abs=1e-6)


def mnist_lowrank_count(
    rank: int, combining: str, depth: int = 3, filter_bias: bool = True, spatial_bias: bool = True
) -> int:
    """By hand: layers (in, out, k, oh, ow) of Table A.2 for MNIST, then fc1 and fc2."""
    layers = [(1, 32, 3, 13, 13), (32, 64, 3, 6, 6), (64, 128, 3, 4, 4)][:depth]
    total = 0
    for cin, cout, k, oh, ow in layers:
        total += rank * cout * cin * k * k + cout * filter_bias  # bases + filter bias
        per_map = oh * ow if combining == "full" else oh + ow
        total += per_map * (rank + spatial_bias)  # combining weights + spatial bias
    flat = {3: 128 * 4 * 4, 2: 64 * 6 * 6}[depth]
    return total + flat * 1024 + 1024 + 1024 * 10 + 10


def test_parameter_counts_by_hand():
    # MNIST depth 3, R = 4, full: conv1 4*288 + 32 + 169*5 = 2029; conv2 4*18432 + 64 + 36*5 = 73972;
    # conv3 4*73728 + 128 + 16*5 = 295120; fc1 2048*1024 + 1024 = 2098176; fc2 10250
    assert mnist_lowrank_count(4, "full") == 2029 + 73972 + 295120 + 2098176 + 10250 == 2479547
    for rank in (1, 2, 4, 8):
        for combining in ("full", "factorized"):
            for depth in (2, 3):
                net = PaperNet(MNIST, "lowrank", depth, rank=rank, combining=combining)
                assert count_parameters(net) == mnist_lowrank_count(rank, combining, depth)
    # one layer, factorized: 2 bases of 3x2x3x3 + 3 biases + (4 + 3) * (2 + 1)
    layer = LowRankConv2d(2, 3, 3, input_size=(6, 5), rank=2, combining="factorized")
    assert count_parameters(layer) == 2 * 54 + 3 + 7 * 3 == 132
    # the two biases are independent switches: 3 filter biases, 4 + 3 row/column spatial biases
    for bias, spatial, expected in [(True, False, 108 + 3 + 14), (False, True, 108 + 21), (False, False, 108 + 14)]:
        layer = LowRankConv2d(
            2, 3, 3, input_size=(6, 5), rank=2, combining="factorized", bias=bias, spatial_bias=spatial
        )
        assert count_parameters(layer) == expected, (bias, spatial)
    # the README's table: MNIST depth 3, R = 4, factorized, without the spatial bias
    # conv1 4*288 + 32 + 26*4 = 1288; conv2 4*18432 + 64 + 12*4 = 73840; conv3 4*73728 + 128 + 8*4 = 295072
    assert mnist_lowrank_count(4, "factorized", spatial_bias=False) == 1288 + 73840 + 295072 + 2098176 + 10250
    for combining in ("full", "factorized"):
        for filter_bias in (True, False):
            for spatial_bias in (True, False):
                opts = {"bias": filter_bias, "spatial_bias": spatial_bias}
                net = PaperNet(MNIST, "lowrank", 3, rank=2, combining=combining, lowrank_options=opts)
                assert count_parameters(net) == mnist_lowrank_count(2, combining, 3, filter_bias, spatial_bias)


@pytest.mark.parametrize("combining", ["full", "factorized"])
@pytest.mark.parametrize(("bias", "spatial"), [(True, False), (False, True), (False, False)])
def test_the_biases_are_independent_switches(combining, bias, spatial):
    """Any pair of switches: the forward pass is the FCN of the effective kernel and per-position bias."""
    torch.manual_seed(6)
    layer = LowRankConv2d(2, 3, 3, input_size=(7, 6), rank=2, combining=combining, bias=bias, spatial_bias=spatial).to(
        DT
    )
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    assert (layer.bias is not None) == bias and layer.spatial_bias == spatial
    x = torch.randn(2, 2, 7, 6, dtype=DT)
    y = layer(x)
    torch.testing.assert_close(y, free_conv2d(x, layer.effective_kernel(), layer.bias_view()), rtol=1e-10, atol=1e-10)
    no_bias = free_conv2d(x, layer.effective_kernel(), None)
    if not bias and not spatial:
        assert layer.bias_view() is None
        torch.testing.assert_close(y, no_bias)
    elif not bias:  # the spatial bias alone: the same value for every filter at a position
        shift = y - no_bias
        torch.testing.assert_close(shift, shift[:, :1].expand_as(shift))
        assert shift.abs().max() > 0.1
    else:  # the filter bias alone: the same value at every position of a filter
        shift = y - no_bias
        torch.testing.assert_close(shift, layer.bias[None, :, None, None].expand_as(shift))


def test_he_uniform_basis_init_has_the_authors_bound():
    """Keras' he_uniform on the (kh, kw, C, R*out) bases: U(-a, a), a = sqrt(6 / (kh kw C))."""
    torch.manual_seed(7)
    net = PaperNet(MNIST, "lowrank", 3, rank=4, lowrank_options={"basis_init": "he_uniform"})
    for name, channels, bound in [("conv1", 1, (6 / 9) ** 0.5), ("conv2", 32, (6 / 288) ** 0.5)]:
        bases = getattr(net, name).bases.detach()
        assert bound == pytest.approx({"conv1": 0.816497, "conv2": 0.144338}[name], abs=1e-6)
        assert bases.abs().max() <= bound
        assert bases.abs().max() > 0.98 * bound  # thousands of draws reach the bound's neighbourhood
        assert bases.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)  # a uniform's spread
        assert getattr(net, name).in_channels == channels
    # the default stays the protocol's Glorot (the CNN's fans): conv1 sqrt(6 / (9 + 288)) = 0.1421
    glorot = PaperNet(MNIST, "lowrank", 3, rank=4).conv1.bases
    assert 0.13 < glorot.abs().max() <= (6 / 297) ** 0.5
    with pytest.raises(ConfigError, match=r"model\.basis_init='he'.*glorot"):
        LowRankConv2d(1, 2, 3, input_size=8, rank=2, basis_init="he")


def test_norm_combining_floors_the_squared_norm_as_the_authors():
    """``tf.math.l2_normalize(z, epsilon=1e-12)``: ``z * rsqrt(max(sum z^2, 1e-12))``."""
    layer = LowRankConv2d(1, 1, 3, input_size=(4, 5), rank=2, normalize="norm").to(DT)  # 2x3 positions
    z = torch.zeros(2, 3, 2, dtype=DT)
    z[0, 0] = torch.tensor([3.0, 4.0])  # a plain vector: unit norm
    z[0, 1] = torch.tensor([1e-8, 0.0])  # tiny: scaled by 1/sqrt(1e-12) = 1e6, not to unit norm
    z[0, 2] = torch.tensor([6e-7, 8e-7])  # norm 1e-6, squared 1e-12: exactly at the floor
    # z[1, *] stays zero: a zero vector stays zero
    with torch.no_grad():
        layer.combining_logits.copy_(z)
    a = layer.combining_weights()
    torch.testing.assert_close(a[0, 0], torch.tensor([0.6, 0.8], dtype=DT))
    torch.testing.assert_close(a[0, 1], torch.tensor([1e-2, 0.0], dtype=DT))  # F.normalize gives [1, 0]
    torch.testing.assert_close(a[0, 2], torch.tensor([0.6, 0.8], dtype=DT))
    torch.testing.assert_close(a[1], torch.zeros(3, 2, dtype=DT))
    a.sum().backward()  # the floor keeps the gradient at the zero vector finite
    assert torch.isfinite(layer.combining_logits.grad).all()


@pytest.mark.parametrize(("data", "depth"), [(MNIST, 2), (MNIST, 3), (CIFAR, 2), (CIFAR, 3)])
def test_paper_networks_train_a_step(data, depth):
    torch.manual_seed(5)
    net = PaperNet(data, "lowrank", depth, hidden=32, rank=2, combining="factorized")
    assert [n for n, _ in free_layers(net)] == net.conv_names
    x = torch.rand(4, data.in_channels, data.height, data.width)
    loss = F.cross_entropy(net(x), torch.arange(4))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    metrics = layer_filter_metrics(net, radii=[1])
    assert {"fd/conv1/r1/euclid", "fd/conv2/to_mean/euclid"} <= set(metrics)


@pytest.mark.parametrize("rank", [0, -1, 170, 1.5, True])
def test_bad_rank_is_a_config_error(rank):
    with pytest.raises(ConfigError, match=r"model\.rank"):
        LowRankConv2d(1, 2, 3, stride=2, input_size=28, rank=rank)  # 13x13 = 169 positions


def test_bad_combining_and_normalize_are_config_errors():
    with pytest.raises(ConfigError, match=r"model\.combining"):
        LowRankConv2d(1, 2, 3, input_size=8, rank=2, combining="diagonal")
    with pytest.raises(ConfigError, match="normalize"):
        LowRankConv2d(1, 2, 3, input_size=8, rank=2, normalize="sigmoid")
    with pytest.raises(ValueError, match="expects input"):
        LowRankConv2d(1, 2, 3, input_size=8, rank=2)(torch.zeros(1, 1, 9, 9))


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        (["model=lowrank", "model.rank=0"], r"model\.rank", r"\[1, 16\]"),  # MNIST depth 3: smallest map 4x4
        (["model=lowrank", "model.rank=17"], r"model\.rank", r"\[1, 16\]"),
        (["model=lowrank", "data=cifar10", "model.depth=2", "model.rank=26"], r"model\.rank", r"\[1, 25\]"),
        (["model=lowrank", "model.combining=diagonal"], r"model\.combining", "full"),
        (["model=fcn", "model.rank=2"], r"model\.rank", "null unless model=lowrank"),
        (["model=cnn", "model.combining=full"], r"model\.combining", "null unless model=lowrank"),
        (["model=lowrank", "model.basis_init=he"], r"model\.basis_init", "glorot.*he_uniform"),
        (["model=fcn", "model.spatial_bias=false"], r"model\.spatial_bias", "null unless model=lowrank"),
        (["model=cnn", "model.basis_init=glorot"], r"model\.basis_init", "null unless model=lowrank"),
        (["model=lowrank", "model.share_tile=2"], r"model\.share_tile", "unless model=fcn"),
    ],
)
def test_bad_lowrank_config_is_a_one_line_error(overrides, key, allowed):
    from weightshare.config.compose import load_config

    with pytest.raises(ConfigError, match=key) as info:
        load_config(overrides)
    assert "\n" not in str(info.value)
    assert re.search(allowed, str(info.value))


def test_lowrank_config_defaults_are_the_authors():
    """conf/model/lowrank.yaml: factorized combining and both biases on (theirs), Glorot bases (the protocol's)."""
    from weightshare.builders import build_model
    from weightshare.config.compose import load_config

    cfg = load_config(["model=lowrank"])
    assert (cfg.model.combining, cfg.model.filter_bias, cfg.model.spatial_bias) == ("factorized", True, True)
    assert cfg.model.basis_init == "glorot"
    net = build_model(cfg.model, MNIST)
    assert count_parameters(net) == mnist_lowrank_count(4, "factorized") == 2478672  # the README's table
    cfg = load_config(["model=lowrank", "model.basis_init=he_uniform", "model.filter_bias=false"])
    net = build_model(cfg.model, MNIST)
    assert net.conv1.basis_init == "he_uniform" and net.conv1.bias is None and net.conv1.spatial_bias
    assert count_parameters(net) == mnist_lowrank_count(4, "factorized", filter_bias=False)


def test_lowrank_config_builds_the_network():
    from weightshare.builders import build_model
    from weightshare.config.compose import load_config

    cfg = load_config(["model=lowrank", "model.rank=25", "data=cifar10", "model.depth=2", "model.combining=factorized"])
    net = build_model(cfg.model, CIFAR)
    assert net.conv2.rank == 25 and net.conv2.combining == "factorized" and net.conv2.output_size == (5, 5)


def test_training_a_lowrank_network_logs_filter_distances_and_images(tmp_path):
    """The filter callbacks run for model=lowrank (builders.build_callbacks), starting shared."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from weightshare.results import read_metrics_csv

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "train.py"), "model=lowrank", "model.rank=2", "data=synthetic"]
    cmd += ["data.options.size=128", "model.hidden=16", "trainer.max_epochs=1", "callbacks.progress_bar=none"]
    cmd += ["eval=clean", "threads=1", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["identity"]["rank"] == 2 and results["identity"]["combining"] == "factorized"  # the default
    assert results["init"]["fd/conv1/r1/euclid"] == pytest.approx(0.0, abs=1e-6)  # starts as a convolution
    assert read_metrics_csv(tmp_path / "metrics.csv")[0]["fd/conv1/r1/euclid"] > 0
    assert (tmp_path / "filters" / "conv1_f0_epoch-init.png").is_file()
