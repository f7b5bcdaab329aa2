"""Partial sharing (TiledConv2d) and soft sharing (neighbour penalty).

References used here are independent of the code under test: a tiled layer is checked
against one ordinary ``F.conv2d`` per tile (cropped to the tile's positions), the free layer
against ``nn.Conv2d``/``FreeConv2d``, the penalty against hand-computed values and a brute-force
loop over position pairs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from weightshare.errors import ConfigError
from weightshare.layers.free_conv import IMPL_NAMES, FreeConv2d, free_conv2d
from weightshare.layers.share_penalty import model_share_penalty, neighbour_penalty
from weightshare.layers.tiled_conv import TiledConv2d
from weightshare.models.shared_conv import count_parameters

DT = torch.float64
# the per-tile reference uses F.conv2d(padding='same') with an even kernel, which warns
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def per_tile_reference(layer: TiledConv2d, x: torch.Tensor) -> torch.Tensor:
    """Output of a tiled layer built from one full convolution per tile, cropped to the tile."""
    out_h, out_w = layer.output_size
    t = layer.tile
    y = x.new_zeros(x.shape[0], layer.out_channels, out_h, out_w)
    for a in range(layer.tiles[0]):
        for b in range(layer.tiles[1]):
            bias = None if layer.bias is None else layer.bias[a, b]
            full = F.conv2d(x, layer.weight[a, b], bias, layer.stride, layer.padding, layer.dilation)
            rows, cols = slice(a * t, min((a + 1) * t, out_h)), slice(b * t, min((b + 1) * t, out_w))
            y[:, :, rows, cols] = full[:, :, rows, cols]
    return y


GEOMETRIES = [
    # in, out, kernel, stride, padding, dilation, input (H, W)
    (3, 4, 3, 1, 0, 1, (9, 9)),  # 7x7 output
    (2, 5, 3, 2, 1, 1, (11, 8)),  # 6x4 output
    (1, 3, (3, 2), (1, 2), (1, 0), (2, 1), (10, 9)),  # rectangular everything
    (2, 3, (3, 4), 1, "same", 1, (7, 6)),  # 'same' with an even kernel: asymmetric padding
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("tile", [1, 2, 3, 5])
def test_tiled_forward_matches_one_convolution_per_tile(geometry, tile):
    cin, cout, k, s, p, d, size = geometry
    torch.manual_seed(0)
    layer = TiledConv2d(cin, cout, k, s, p, d, input_size=size, tile=tile).to(DT)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, cin, *size, dtype=DT)
    y = layer(x)
    assert y.shape == (3, cout, *layer.output_size)
    torch.testing.assert_close(y, per_tile_reference(layer, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPL_NAMES)
def test_every_free_conv_implementation_gives_the_tiled_output_and_gradient(impl):
    torch.manual_seed(9)
    layer = TiledConv2d(3, 4, 3, 2, 1, input_size=(11, 9), tile=2, impl=impl).to(DT)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, 11, 9, dtype=DT)
    y = layer(x)
    torch.testing.assert_close(y, per_tile_reference(layer, x), rtol=1e-10, atol=1e-10)
    g = torch.randn_like(y)
    grads = torch.autograd.grad((y * g).sum(), [layer.weight, layer.bias])
    ref = torch.autograd.grad((per_tile_reference(layer, x) * g).sum(), [layer.weight, layer.bias])
    for got, want in zip(grads, ref):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_partial_last_tile_geometry():
    # 7x7 output in 3x3 tiles -> 3x3 tiles, the last row/column of tiles holds one position
    layer = TiledConv2d(1, 1, 3, input_size=9, tile=3)
    assert layer.output_size == (7, 7)
    assert layer.tiles == (3, 3)
    assert layer.weight.shape == (3, 3, 1, 1, 3, 3)
    assert layer.row_tile.tolist() == [0, 0, 0, 1, 1, 1, 2]
    kv = layer.kernel_view()
    assert kv.shape == (7, 7, 1, 1, 3, 3)
    for i in range(7):
        for j in range(7):
            assert torch.equal(kv[i, j], layer.weight[i // 3, j // 3])


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_tile_one_is_the_free_convolution(geometry):
    cin, cout, k, s, p, d, size = geometry
    torch.manual_seed(1)
    free = FreeConv2d(cin, cout, k, s, p, d, input_size=size).to(DT)
    with torch.no_grad():
        free.bias_view().normal_()
    tiled = TiledConv2d(cin, cout, k, s, p, d, input_size=size, tile=1).to(DT)
    with torch.no_grad():  # copy the weights across by hand
        tiled.weight.copy_(free.kernel_view())
        tiled.bias.copy_(free.bias_view())
    x = torch.randn(2, cin, *size, dtype=DT)
    torch.testing.assert_close(tiled(x), free(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(TiledConv2d.from_free(free, 1).to(DT)(x), free(x), rtol=1e-10, atol=1e-10)
    assert count_parameters(tiled) == count_parameters(free)
    assert tiled.output_size == tuple(free.output_size)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("extra", [0, 7])
def test_full_tile_is_the_convolution(geometry, extra):
    cin, cout, k, s, p, d, size = geometry
    torch.manual_seed(2)
    conv = nn.Conv2d(cin, cout, k, s, p, d).to(DT)
    probe = TiledConv2d(cin, cout, k, s, p, d, input_size=size, tile=1)
    tile = max(probe.output_size) + extra
    tiled = TiledConv2d(cin, cout, k, s, p, d, input_size=size, tile=tile).to(DT)
    assert tiled.tiles == (1, 1)
    with torch.no_grad():
        tiled.weight[0, 0].copy_(conv.weight)
        tiled.bias[0, 0].copy_(conv.bias)
    x = torch.randn(2, cin, *size, dtype=DT)
    torch.testing.assert_close(tiled(x), conv(x), rtol=1e-10, atol=1e-10)
    assert count_parameters(tiled) == count_parameters(conv)


@pytest.mark.parametrize("tile", [1, 2, 4, 13])
def test_from_conv_reproduces_the_convolution_for_every_tile(tile):
    torch.manual_seed(3)
    conv = nn.Conv2d(1, 32, 3, stride=2).to(DT)  # MNIST layer 1: 28x28 -> 13x13
    tiled = TiledConv2d.from_conv(conv, (28, 28), tile)
    assert tiled.weight.dtype == DT
    x = torch.randn(4, 1, 28, 28, dtype=DT)
    torch.testing.assert_close(tiled(x), conv(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(tiled.reference_kernel, conv.weight.detach())
    assert tiled.reference_kernel.data_ptr() != conv.weight.data_ptr()


def test_state_dict_roundtrip_keeps_the_reference_kernel():
    conv = nn.Conv2d(2, 3, 3)
    saved = TiledConv2d.from_conv(conv, 8, tile=2)
    fresh = TiledConv2d(2, 3, 3, input_size=8, tile=2)
    assert fresh.reference_kernel is None
    fresh.load_state_dict(saved.state_dict())
    torch.testing.assert_close(fresh.reference_kernel, conv.weight.detach())
    x = torch.randn(2, 2, 8, 8)
    torch.testing.assert_close(fresh(x), conv(x), rtol=1e-5, atol=1e-6)
    assert set(saved.state_dict()) == {"weight", "bias", "reference_kernel"}  # tile indices are derived


@pytest.mark.parametrize(("tile", "n_tiles"), [(1, 169), (2, 49), (4, 16), (5, 9), (7, 4), (13, 1), (50, 1)])
def test_parameter_count_follows_the_tiles(tile, n_tiles):
    # MNIST layer 1: 13x13 positions, kernel 3x3x1, 32 filters: 288 weights + 32 biases per tile
    layer = TiledConv2d(1, 32, 3, stride=2, input_size=28, tile=tile)
    assert count_parameters(layer) == n_tiles * (32 * 9 + 32)
    if tile == 1:
        free = FreeConv2d(1, 32, 3, stride=2, input_size=28)
        assert count_parameters(layer) == count_parameters(free) == 54080
    if n_tiles == 1:
        assert count_parameters(layer) == count_parameters(nn.Conv2d(1, 32, 3, stride=2)) == 320


def test_tile_gradient_is_the_sum_over_its_positions():
    torch.manual_seed(4)
    cin, cout, size = 2, 3, (9, 8)
    tiled = TiledConv2d(cin, cout, 3, padding=1, input_size=size, tile=3).to(DT)
    x = torch.randn(2, cin, *size, dtype=DT)
    g = torch.randn(2, cout, *tiled.output_size, dtype=DT)
    (tiled(x) * g).sum().backward()
    # independent of free_conv2d: the per-tile convolutions give the same tile gradients
    ref_grad_w, ref_grad_b = torch.autograd.grad((per_tile_reference(tiled, x) * g).sum(), [tiled.weight, tiled.bias])
    torch.testing.assert_close(tiled.weight.grad, ref_grad_w, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(tiled.bias.grad, ref_grad_b, rtol=1e-10, atol=1e-10)
    # the same computation with one independent leaf kernel per position
    w_pos = tiled.kernel_view().detach().requires_grad_(True)
    b_pos = tiled.bias_view().detach().requires_grad_(True)
    (free_conv2d(x, w_pos, b_pos, tiled.stride, tiled.padding, tiled.dilation) * g).sum().backward()
    grad_pos = w_pos.grad
    t = tiled.tile
    for a in range(tiled.tiles[0]):
        for b in range(tiled.tiles[1]):
            rows, cols = slice(a * t, (a + 1) * t), slice(b * t, (b + 1) * t)
            expected = grad_pos[rows, cols].sum(dim=(0, 1))
            torch.testing.assert_close(tiled.weight.grad[a, b], expected, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(
                tiled.bias.grad[a, b], b_pos.grad[rows, cols].sum(dim=(0, 1)), rtol=1e-10, atol=1e-10
            )


def test_from_free_takes_the_mean_of_each_tile():
    torch.manual_seed(5)
    free = FreeConv2d(2, 3, 3, input_size=(9, 7)).to(DT)  # 7x5 positions
    with torch.no_grad():
        free.kernel_view().normal_()
        free.bias_view().normal_()
    tiled = TiledConv2d.from_free(free, 3)
    assert tiled.tiles == (3, 2)
    kv, bv = free.kernel_view(), free.bias_view()
    for a in range(3):
        for b in range(2):
            rows, cols = slice(3 * a, 3 * a + 3), slice(3 * b, 3 * b + 3)
            torch.testing.assert_close(tiled.weight[a, b], kv[rows, cols].mean(dim=(0, 1)))
            torch.testing.assert_close(tiled.bias[a, b], bv[rows, cols].mean(dim=(0, 1)))
    # the last tile row holds a single position (row 6): its mean is that row's kernel
    torch.testing.assert_close(tiled.weight[2, 0], kv[6, 0:3].mean(dim=0))


def test_init_scales():
    conv_init = TiledConv2d(1, 32, 3, stride=2, input_size=28, tile=1)
    keras_init = TiledConv2d(1, 32, 3, stride=2, input_size=28, tile=1, init="keras")
    # protocol: MNIST layer 1 limits 0.142 (conv fans) and ~0.029 (Keras fans x 169 positions)
    conv_limit, keras_limit = math.sqrt(6 / (9 + 288)), math.sqrt(6 / (169 * (9 + 32)))
    assert conv_limit == pytest.approx(0.142, abs=1e-3) and keras_limit == pytest.approx(0.0294, abs=1e-4)
    assert 0.95 * conv_limit < conv_init.weight.abs().max() <= conv_limit
    assert 0.95 * keras_limit < keras_init.weight.abs().max() <= keras_limit
    assert torch.count_nonzero(conv_init.bias) == 0
    assert TiledConv2d(1, 2, 3, input_size=5, tile=1, bias=False).bias_view() is None


@pytest.mark.parametrize("tile", [0, -2, 1.5, True, "2"])
def test_bad_tile_is_a_config_error(tile):
    with pytest.raises(ConfigError, match=r"model\.share_tile"):
        TiledConv2d(1, 2, 3, input_size=8, tile=tile)


def test_bad_init_impl_are_config_errors_and_too_small_input_a_value_error():
    with pytest.raises(ConfigError, match=r"model\.fcn_init"):
        TiledConv2d(1, 2, 3, input_size=8, tile=2, init="glorot")
    with pytest.raises(ConfigError, match=r"model\.impl"):
        TiledConv2d(1, 2, 3, input_size=8, tile=2, impl="cuda_magic")
    with pytest.raises(ValueError, match="input_size=") as err:
        TiledConv2d(1, 2, 5, input_size=3, tile=2)
    assert not isinstance(err.value, ConfigError)


# ---------------------------------------------------------------------- soft sharing


def brute_force_penalty(kernel: torch.Tensor, radius: int) -> float:
    """Sum over unordered pairs in the same row/column at distance 1..radius, by double loop."""
    oh, ow = kernel.shape[:2]
    positions = [(i, j) for i in range(oh) for j in range(ow)]
    total = 0.0
    for n, (i, j) in enumerate(positions):
        for k, l in positions[n + 1 :]:
            same_row = i == k and 1 <= abs(j - l) <= radius
            same_col = j == l and 1 <= abs(i - k) <= radius
            if same_row or same_col:
                total += float((kernel[i, j] - kernel[k, l]).pow(2).sum())
    return total


def hand_case() -> torch.Tensor:
    # 2x2 positions, blocks of 2 numbers: a=(1,2) b=(3,5) / c=(0,0) d=(1,-1)
    return torch.tensor([[[1.0, 2.0], [3.0, 5.0]], [[0.0, 0.0], [1.0, -1.0]]], dtype=DT)


def test_penalty_hand_made_value():
    k = hand_case()
    # pairs (a,b): 4+9, (c,d): 1+1, (a,c): 1+4, (b,d): 4+36
    assert neighbour_penalty(k).item() == pytest.approx(60.0)
    assert neighbour_penalty(k, radius=2).item() == pytest.approx(60.0)  # no pair 2 apart in a 2x2 map
    line = torch.tensor([0.0, 1.0, 3.0], dtype=DT).reshape(3, 1, 1)  # 3x1 map
    assert neighbour_penalty(line, radius=1).item() == pytest.approx(1.0 + 4.0)
    assert neighbour_penalty(line, radius=2).item() == pytest.approx(1.0 + 4.0 + 9.0)


def test_penalty_hand_made_gradient():
    k = hand_case().requires_grad_(True)
    neighbour_penalty(k).backward()
    # d/dw_p = 2 * sum over compared neighbours q of (w_p - w_q)
    expected = torch.tensor([[[-2.0, -2.0], [8.0, 18.0]], [[-4.0, -2.0], [-2.0, -14.0]]], dtype=DT)
    torch.testing.assert_close(k.grad, expected)


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_penalty_matches_brute_force_and_gradcheck(radius):
    torch.manual_seed(6)
    k = torch.randn(4, 5, 2, 1, 2, 2, dtype=DT, requires_grad=True)
    assert neighbour_penalty(k, radius).item() == pytest.approx(brute_force_penalty(k.detach(), radius))
    assert torch.autograd.gradcheck(lambda w: neighbour_penalty(w, radius), (k,))


def test_penalty_is_zero_for_a_converted_cnn():
    torch.manual_seed(7)
    conv = nn.Conv2d(3, 8, 5, stride=2)
    free = FreeConv2d.from_conv(conv, (32, 32))
    assert neighbour_penalty(free.kernel_view()).item() == 0.0
    assert model_share_penalty(nn.Sequential(free, TiledConv2d.from_conv(conv, (32, 32), 3))).item() == 0.0
    with torch.no_grad():
        free.kernel_view()[0, 0] += 0.5  # the corner moves by 0.5 everywhere: 2 neighbours at radius 1
    expected = 2 * 0.5**2 * conv.weight.numel()
    assert neighbour_penalty(free.kernel_view()).item() == pytest.approx(expected, rel=1e-5)


def test_model_share_penalty_sums_layers_and_skips_convolutions():
    torch.manual_seed(8)
    free = FreeConv2d(1, 4, 3, input_size=8)
    tiled = TiledConv2d(4, 4, 3, input_size=6, tile=2)
    # free is reachable twice, the plain convolution has no positions
    model = nn.Sequential(free, nn.ReLU(), tiled, nn.Conv2d(4, 2, 3), nn.Sequential(free))
    expected = neighbour_penalty(free.kernel_view(), 2) + neighbour_penalty(tiled.kernel_view(), 2)
    value = model_share_penalty(model, radius=2)
    torch.testing.assert_close(value, expected)
    # tiled: within-tile pairs are zero, so only pairs across tile borders count
    assert neighbour_penalty(tiled.kernel_view()).item() == pytest.approx(
        brute_force_penalty(tiled.kernel_view().detach(), 1), rel=1e-5
    )
    value.backward()
    assert tiled.weight.grad is not None and tiled.weight.grad.abs().sum() > 0
    zero = model_share_penalty(nn.Sequential(nn.Conv2d(1, 1, 3)))
    assert zero.shape == () and zero.item() == 0.0


@pytest.mark.parametrize("radius", [0, -1, 1.0, True])
def test_bad_radius_is_a_config_error(radius):
    with pytest.raises(ConfigError, match=r"model\.penalty_radius"):
        neighbour_penalty(torch.zeros(2, 2, 1), radius)


def test_share_penalty_keeps_masked_weights_at_zero_under_adam():
    """The penalty reads the masked kernel: removed weights get exactly zero gradient.

    Penalising the stored weights instead pulls every removed (zero) weight towards its
    neighbours, and five Adam steps make all of them non-zero.
    """
    torch.manual_seed(11)
    layer = FreeConv2d(2, 3, 3, input_size=(6, 6), connectivity=0.5, mask_seed=3)
    removed = ~layer.mask
    assert removed.sum() > 100  # a real test: about half of the 4*4*3*3*2*3 weights
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x = torch.randn(8, 2, 6, 6)
    for _ in range(5):
        opt.zero_grad()
        loss = layer(x).pow(2).mean() + 1.0 * model_share_penalty(layer)
        loss.backward()
        assert torch.all(layer.weight.grad[removed] == 0)
        opt.step()
    assert torch.all(layer.weight[removed] == 0)
    assert torch.all(layer.weight[layer.mask] != 0)
    # the penalty equals the brute-force one on the explicitly masked kernel
    masked = (layer.weight * layer.mask).permute(0, 1, 5, 4, 2, 3).detach()
    assert model_share_penalty(layer).item() == pytest.approx(brute_force_penalty(masked, 1), rel=1e-5)


def test_share_penalty_input_mode_leaves_weights_of_removed_inputs_untouched():
    """``input`` mode: weights reading a removed input unit keep their initial value exactly."""
    torch.manual_seed(12)
    layer = FreeConv2d(2, 3, 3, padding=1, input_size=(6, 6), connectivity=0.4, connectivity_mode="input", mask_seed=5)
    # independent reference of "reads a removed input": loop over positions and kernel taps
    reads_removed = torch.zeros(6, 6, 3, 3, 2, dtype=torch.bool)
    for i in range(6):
        for j in range(6):
            for a in range(3):
                for b in range(3):
                    y, x_ = i + a - 1, j + b - 1
                    if 0 <= y < 6 and 0 <= x_ < 6:
                        reads_removed[i, j, a, b] = ~layer.input_mask[:, y, x_]
    torch.testing.assert_close(layer.input_weight_mask()[..., 0], ~reads_removed)
    dead = reads_removed.unsqueeze(-1).expand_as(layer.weight)
    assert dead.any() and (~dead).any()
    start = layer.weight.detach().clone()
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x = torch.randn(4, 2, 6, 6)
    for _ in range(3):
        opt.zero_grad()
        (layer(x).pow(2).mean() + model_share_penalty(layer)).backward()
        opt.step()
    assert torch.equal(layer.weight[dead], start[dead])
    assert not torch.equal(layer.weight[~dead], start[~dead])
    # the effective kernel computes the layer's function on the unmasked input
    torch.testing.assert_close(free_conv2d(x, layer.effective_kernel(), layer.bias, padding=1), layer(x))
