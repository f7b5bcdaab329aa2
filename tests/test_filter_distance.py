"""Filter distances of free layers against hand-computed values and a slow loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from weightshare.errors import ConfigError
from weightshare.metrics import (
    distance_to_mean,
    distance_to_reference,
    free_layers,
    layer_filter_metrics,
    ring_distances,
    ring_offsets,
)


def slow_ring(kernel: np.ndarray, radius: int) -> dict[str, float]:
    """Explicit loop over positions and ring neighbours, straight from the protocol's text."""
    h, w = kernel.shape[:2]
    k = kernel.reshape(h, w, -1) / np.linalg.norm(kernel)
    eu, co = [], []
    for i in range(radius, h - radius):
        for j in range(radius, w - radius):
            for y in range(i - radius, i + radius + 1):
                for x in range(j - radius, j + radius + 1):
                    if max(abs(y - i), abs(x - j)) != radius:
                        continue
                    a, b = k[i, j], k[y, x]
                    eu.append(np.linalg.norm(a - b))
                    co.append(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return {"euclid": float(np.mean(eu)), "cosine": float(np.mean(co))}


def slow_to_mean(kernel: np.ndarray) -> dict[str, float]:
    h, w = kernel.shape[:2]
    k = kernel.reshape(h * w, -1) / np.linalg.norm(kernel)
    m = k.mean(axis=0)
    eu = [np.linalg.norm(a - m) for a in k]
    co = [1.0 - a @ m / (np.linalg.norm(a) * np.linalg.norm(m)) for a in k]
    return {"euclid": float(np.mean(eu)), "cosine": float(np.mean(co))}


class FakeFree(nn.Module):
    """Stand-in for FreeConv2d: only the kernel_view()/reference_kernel contract matters here."""

    def __init__(self, oh: int, ow: int, out: int, inp: int, k: int, reference: torch.Tensor | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(oh, ow, out, inp, k, k))
        self.reference_kernel = reference

    def kernel_view(self) -> torch.Tensor:
        return self.weight


def test_ring_offsets_count_and_radius():
    for r in (1, 2, 4):
        offs = ring_offsets(r)
        assert len(offs) == 8 * r == len(set(offs))
        assert all(max(abs(dy), abs(dx)) == r for dy, dx in offs)


def test_identical_filters_give_zero():
    block = torch.randn(8, 3, 3, 3)
    kernel = block.expand(7, 9, *block.shape)
    for r in (1, 2, 3):
        d = ring_distances(kernel, r)
        assert d["euclid"] == pytest.approx(0.0, abs=1e-6)
        assert d["cosine"] == pytest.approx(0.0, abs=1e-6)
    m = distance_to_mean(kernel)
    assert m["euclid"] == pytest.approx(0.0, abs=1e-6)
    assert m["cosine"] == pytest.approx(0.0, abs=1e-6)


def test_checkerboard_of_opposite_filters():
    # 3x3 map, block (i, j) = (-1)^(i+j) v with |v| = 1. Global norm = 3, so each normalised
    # block is +-v/3. Radius 1: the only centre (1, 1) is +; its 4 edge neighbours are -
    # (distance |v/3 + v/3| = 2/3, cosine distance 2) and its 4 corners + (0, 0).
    # Mean euclid = 4 * (2/3) / 8 = 1/3; mean cosine = 4 * 2 / 8 = 1.
    v = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    v /= v.norm()
    sign = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]], dtype=torch.float64)
    kernel = sign[:, :, None, None, None, None] * v
    d = ring_distances(kernel, 1)
    assert d["euclid"] == pytest.approx(1 / 3, abs=1e-12)
    assert d["cosine"] == pytest.approx(1.0, abs=1e-12)
    # Mean block = (5 - 4) v / 9 / 3 = v/27. + blocks: |v/3 - v/27| = 8/27, cosine 0;
    # - blocks: |-v/3 - v/27| = 10/27, cosine 2. Means: (5*8 + 4*10)/(9*27) = 80/243 and 8/9.
    m = distance_to_mean(kernel)
    assert m["euclid"] == pytest.approx(80 / 243, abs=1e-12)
    assert m["cosine"] == pytest.approx(8 / 9, abs=1e-12)


def test_orthogonal_checkerboard_radius_two():
    # 5x5 map, block (i, j) = e_{(i+j) mod 2} (orthogonal unit vectors); global norm 5 so the
    # blocks have norm 1/5. Radius 2: only the centre (2, 2); of its 16 ring positions 8 have
    # dy+dx even (same vector: distance 0, cosine 0) and 8 odd (distance sqrt(2)/5, cosine 1).
    # Mean euclid = sqrt(2)/10, mean cosine = 1/2.
    e = torch.eye(2, dtype=torch.float64)
    parity = (torch.arange(5)[:, None] + torch.arange(5)[None, :]) % 2
    kernel = e[parity]  # (5, 5, 2)
    d = ring_distances(kernel, 2)
    assert d["euclid"] == pytest.approx(math.sqrt(2) / 10, abs=1e-12)
    assert d["cosine"] == pytest.approx(0.5, abs=1e-12)


def test_glorot_init_sanity_value_mnist_layer1():
    # Glorot-uniform conv kernel (32, 1, 3, 3) drawn independently at each of 13x13 positions:
    # after global normalisation each block has norm ~1/13, two independent blocks are
    # ~sqrt(2)/13 = sqrt(2/169) = 0.1088 apart, and nearly orthogonal (cosine distance ~1).
    g = torch.Generator().manual_seed(0)
    fan_in, fan_out = 1 * 9, 32 * 9
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    kernel = (torch.rand(13, 13, 32, 1, 3, 3, generator=g) * 2 - 1) * limit
    for r in (1, 4):
        d = ring_distances(kernel, r)
        assert d["euclid"] == pytest.approx(math.sqrt(2 / 169), rel=0.05)
        assert d["cosine"] == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
    ("shape", "radii"),
    [
        ((5, 5, 3, 1, 3, 3), (1, 2)),
        ((6, 9, 4, 2, 2, 2), (1, 2)),  # non-square map
        ((11, 7, 2, 3, 3, 3), (1, 2, 3)),  # non-square, taller than wide
        ((13, 13, 5, 1, 3, 3), (1, 4, 6)),
        ((3, 3, 7), (1,)),  # plain vectors per position
    ],
)
def test_agrees_with_slow_loop(shape, radii):
    g = torch.Generator().manual_seed(sum(shape))
    kernel = torch.randn(*shape, generator=g, dtype=torch.float64) + 0.3  # not centred: cos != 1
    for r in radii:
        fast, slow = ring_distances(kernel, r), slow_ring(kernel.numpy(), r)
        assert fast["euclid"] == pytest.approx(slow["euclid"], abs=1e-10)
        assert fast["cosine"] == pytest.approx(slow["cosine"], abs=1e-10)
    fast, slow = distance_to_mean(kernel), slow_to_mean(kernel.numpy())
    assert fast["euclid"] == pytest.approx(slow["euclid"], abs=1e-10)
    assert fast["cosine"] == pytest.approx(slow["cosine"], abs=1e-10)


def test_float32_input_is_close_to_float64():
    kernel = torch.randn(14, 14, 8, 3, 5, 5, dtype=torch.float64)
    for r in (1, 4):
        d64, d32 = ring_distances(kernel, r), ring_distances(kernel.float(), r)
        assert d32["euclid"] == pytest.approx(d64["euclid"], rel=1e-5)
        assert d32["cosine"] == pytest.approx(d64["cosine"], rel=1e-5)


def test_bad_radius_raises_config_error_naming_size():
    kernel = torch.randn(6, 6, 2, 1, 3, 3)
    with pytest.raises(ConfigError, match="radius"):
        ring_distances(kernel, 0)
    with pytest.raises(ConfigError, match="6x6"):
        ring_distances(kernel, 3)
    assert ring_distances(kernel, 2)["euclid"] > 0


def test_distance_to_reference():
    ref = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    converted = 2.5 * ref.expand(5, 4, *ref.shape)  # any scale: both sides are normalised
    d = distance_to_reference(converted, ref)
    assert d["euclid"] == pytest.approx(0.0, abs=1e-12)
    assert d["cosine"] == pytest.approx(0.0, abs=1e-12)
    # Against the explicit formula: kernel / ||kernel||, reference / (sqrt(20) ||reference||).
    kernel = torch.randn(5, 4, *ref.shape, dtype=torch.float64)
    k = kernel.reshape(20, -1).numpy() / np.linalg.norm(kernel.numpy())
    rr = ref.reshape(-1).numpy() / (math.sqrt(20) * np.linalg.norm(ref.numpy()))
    eu = np.mean([np.linalg.norm(a - rr) for a in k])
    co = np.mean([1 - a @ rr / (np.linalg.norm(a) * np.linalg.norm(rr)) for a in k])
    d = distance_to_reference(kernel, ref)
    assert d["euclid"] == pytest.approx(eu, abs=1e-12)
    assert d["cosine"] == pytest.approx(co, abs=1e-12)
    with pytest.raises(ConfigError, match="reference"):
        distance_to_reference(kernel, ref[:, :1])


class ThreeLayerNet(nn.Module):
    """MNIST depth-3 FCN geometry (13x13, 6x6, 4x4 maps) with small channel counts."""

    def __init__(self, with_reference: bool = False):
        super().__init__()
        ref = torch.randn(4, 1, 3, 3) if with_reference else None
        self.conv1 = FakeFree(13, 13, 4, 1, 3, reference=ref)
        self.conv2 = FakeFree(6, 6, 5, 4, 3)
        self.conv3 = FakeFree(4, 4, 6, 5, 3)
        self.fc1 = nn.Linear(96, 10)


def test_layer_filter_metrics_keys_and_values():
    net = ThreeLayerNet(with_reference=True)
    out = layer_filter_metrics(net, radii=(1, 4))
    expected = {
        *(f"fd/conv{i}/r1/{s}" for i in (1, 2, 3) for s in ("euclid", "cosine")),
        "fd/conv1/r4/euclid",
        "fd/conv1/r4/cosine",  # r=4 needs a 9x9 map: only the 13x13 layer has it
        *(f"fd/conv{i}/to_mean/{s}" for i in (1, 2, 3) for s in ("euclid", "cosine")),
        "fd/conv1/to_ref/euclid",
        "fd/conv1/to_ref/cosine",
        "fd/conv1/to_ref/euclid_raw",
    }
    assert set(out) == expected
    assert out["fd/conv2/r1/euclid"] == pytest.approx(ring_distances(net.conv2.weight, 1)["euclid"])
    assert out["fd/conv1/r4/cosine"] == pytest.approx(ring_distances(net.conv1.weight, 4)["cosine"])
    ref = distance_to_reference(net.conv1.weight, net.conv1.reference_kernel)
    assert out["fd/conv1/to_ref/euclid"] == pytest.approx(ref["euclid"])
    assert all(isinstance(v, float) for v in out.values())


def test_layer_selection_and_cnn():
    net = ThreeLayerNet()
    out = layer_filter_metrics(net, radii=(1,), layers=["conv2"])
    assert set(out) == {
        "fd/conv2/r1/euclid",
        "fd/conv2/r1/cosine",
        "fd/conv2/to_mean/euclid",
        "fd/conv2/to_mean/cosine",
    }
    # A CNN has no free layer: nothing to measure, and naming its shared layer is not an error.
    cnn = nn.Sequential()
    cnn.add_module("conv1", nn.Conv2d(1, 4, 3))
    assert layer_filter_metrics(cnn) == {}
    assert layer_filter_metrics(cnn, layers=["conv1"]) == {}
    with pytest.raises(ConfigError, match="conv9"):
        layer_filter_metrics(net, layers=["conv9"])
    with pytest.raises(ConfigError, match="radii"):
        layer_filter_metrics(net, radii=(0,))


def test_nested_free_layer_listed_once():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = FakeFree(5, 5, 2, 1, 3)

        def kernel_view(self):
            return self.inner.kernel_view()

    net = nn.Module()
    net.conv1 = Wrapper()
    assert [n for n, _ in free_layers(net)] == ["conv1"]


def test_real_free_conv_if_available():
    free_conv = pytest.importorskip("weightshare.layers.free_conv")
    torch.manual_seed(0)
    layer = free_conv.FreeConv2d(1, 32, 3, stride=2, input_size=(28, 28))
    assert tuple(layer.kernel_view().shape) == (13, 13, 32, 1, 3, 3)
    net = nn.Module()
    net.conv1 = layer
    out = layer_filter_metrics(net)
    assert out["fd/conv1/r1/euclid"] == pytest.approx(math.sqrt(2 / 169), rel=0.05)
    conv = nn.Conv2d(1, 32, 3, stride=2)
    net.conv1 = free_conv.FreeConv2d.from_conv(conv, input_size=(28, 28))
    out = layer_filter_metrics(net)
    assert out["fd/conv1/to_ref/euclid"] == pytest.approx(0.0, abs=1e-6)
    assert out["fd/conv1/r1/euclid"] == pytest.approx(0.0, abs=1e-6)


def test_filter_metrics_read_the_masked_kernel():
    """A FreeConv2d with connectivity is measured on the kernel it computes with.

    Stored values under the mask (written behind the layer's back) must not change a metric:
    the reference is the explicitly masked kernel given to the functions directly.
    """
    from weightshare.layers import FreeConv2d, filter_kernel

    torch.manual_seed(3)
    conv = nn.Conv2d(2, 4, 3)
    layer = FreeConv2d.from_conv(conv, (9, 9), connectivity=0.5, mask_seed=1)
    with torch.no_grad():
        layer.weight.add_(0.1 * torch.randn_like(layer.weight)).mul_(layer.mask)
        clean = layer_filter_metrics(nn.ModuleDict({"conv1": layer}), radii=(1, 2))
        layer.weight[~layer.mask] = 5.0  # garbage where the layer has no connection
    net = nn.ModuleDict({"conv1": layer})
    out = layer_filter_metrics(net, radii=(1, 2))
    masked = (layer.weight * layer.mask).permute(0, 1, 5, 4, 2, 3).detach().double()
    assert torch.equal(filter_kernel(layer), (layer.weight * layer.mask).permute(0, 1, 5, 4, 2, 3))
    want = {f"fd/conv1/r{r}/{k}": v for r in (1, 2) for k, v in ring_distances(masked, r).items()}
    want.update({f"fd/conv1/to_mean/{k}": v for k, v in distance_to_mean(masked).items()})
    want.update({f"fd/conv1/to_ref/{k}": v for k, v in distance_to_reference(masked, conv.weight).items()})
    assert out.keys() == want.keys()
    for key, value in want.items():
        assert out[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
        assert out[key] == pytest.approx(clean[key], rel=1e-5, abs=1e-7), key
    # the raw stored kernel would read very differently
    raw = distance_to_reference(layer.kernel_view().detach(), conv.weight)["euclid_raw"]
    assert out["fd/conv1/to_ref/euclid_raw"] < 1.0 < raw


class OneRowFree(nn.Module):
    """Hand-made 1x3 position map with 1x1 kernels of 2 input channels and a reference."""

    def __init__(self, kernel: torch.Tensor, reference: torch.Tensor):
        super().__init__()
        self.kernel = kernel
        self.reference_kernel = reference

    def kernel_view(self) -> torch.Tensor:
        return self.kernel


def test_to_ref_euclid_raw_hand_made():
    # reference block (out=1, in=2, 1x1) = (3, 4): norm 5
    ref = torch.tensor([3.0, 4.0], dtype=torch.float64).view(1, 2, 1, 1)
    # positions: ref itself (distance 0), 2*ref (distance 5 -> 1), ref + (0, 10) (distance 10 -> 2)
    blocks = [ref, 2 * ref, ref + torch.tensor([0.0, 10.0], dtype=torch.float64).view(1, 2, 1, 1)]
    kernel = torch.stack(blocks).unsqueeze(0)  # (1, 3, 1, 2, 1, 1)
    d = distance_to_reference(kernel, ref)
    assert d["euclid_raw"] == pytest.approx((0.0 + 1.0 + 2.0) / 3, abs=1e-12)
    out = layer_filter_metrics(nn.ModuleDict({"conv1": OneRowFree(kernel, ref)}), radii=())
    assert out["fd/conv1/to_ref/euclid_raw"] == pytest.approx(1.0, abs=1e-12)
    # uniform growth by 1.5: the normalised distance cannot see it, the raw one reads 0.5
    grown = 1.5 * ref.expand(4, 5, *ref.shape)
    d = distance_to_reference(grown, ref)
    assert d["euclid"] == pytest.approx(0.0, abs=1e-12)
    assert d["euclid_raw"] == pytest.approx(0.5, abs=1e-12)
    # a zero reference leaves the raw distance unscaled: mean ||W_p|| = 5 * 1.5 = 7.5
    assert distance_to_reference(grown, torch.zeros_like(ref))["euclid_raw"] == pytest.approx(7.5)
