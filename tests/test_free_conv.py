"""FreeConv2d / free_conv2d against independent references.

References: ``F.conv2d`` (through ``from_conv``), an explicit loop over output positions,
``torch.autograd.gradcheck`` (finite differences), hand-computed parameter counts and Glorot
bounds, and plain autograd for masks / torch.func / autocast.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from weightshare.errors import ConfigError
from weightshare.layers import FreeConv2d, free_conv2d
from weightshare.layers.free_conv import IMPL_NAMES, glorot_limit

IMPLS = [name for name in IMPL_NAMES if name != "auto"]
F64 = torch.float64


# ---------------------------------------------------------------- independent references


def loop_reference(
    x: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    pad: tuple[int, int, int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """Obviously-correct free convolution: one explicit dot product per output position.

    ``kernel`` is (oh, ow, O, C, kh, kw); ``pad`` is (top, bottom, left, right).
    """
    oh, ow, _, _, kh, kw = kernel.shape
    xp = F.pad(x, (pad[2], pad[3], pad[0], pad[1]))
    rows = []
    for y in range(oh):
        cols = []
        for x_ in range(ow):
            top, left = y * stride[0], x_ * stride[1]
            patch = xp[:, :, top : top + dilation[0] * (kh - 1) + 1 : dilation[0]]
            patch = patch[:, :, :, left : left + dilation[1] * (kw - 1) + 1 : dilation[1]]
            val = (patch.unsqueeze(1) * kernel[y, x_].unsqueeze(0)).sum(dim=(2, 3, 4))  # (B, O)
            if bias is not None:
                val = val + bias[y, x_]
            cols.append(val)
        rows.append(torch.stack(cols, dim=-1))
    return torch.stack(rows, dim=-2)


def paper_net(data: str, kind: str, depth: int, impl: str = "auto") -> nn.Sequential:
    """Table A.2 networks built from layers (the protocol's geometry, valid padding)."""
    specs = {
        "mnist": (1, 28, [(3, 32, 2), (3, 64, 2), (3, 128, 1)]),
        "cifar": (3, 32, [(5, 64, 2), (5, 128, 2), (3, 256, 1)]),
    }
    c, s, layers_spec = specs[data]
    layers: list[nn.Module] = []
    for k, filters, stride in layers_spec[:depth]:
        if kind == "cnn":
            layers.append(nn.Conv2d(c, filters, k, stride))
        else:
            layers.append(FreeConv2d(c, filters, k, stride, input_size=(s, s), impl=impl))
        layers.append(nn.ReLU())
        c, s = filters, (s - k) // stride + 1
    layers += [nn.Flatten(), nn.Linear(c * s * s, 1024), nn.ReLU(), nn.Linear(1024, 10)]
    return nn.Sequential(*layers)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------- exactness vs F.conv2d

conv_cases = st.fixed_dictionaries(
    {
        "B": st.integers(1, 3),
        "C": st.integers(1, 11),  # below and above the batch-innermost gather threshold (8)
        "O": st.integers(1, 5),
        "kh": st.integers(1, 4),
        "kw": st.integers(1, 4),
        "sh": st.integers(1, 3),
        "sw": st.integers(1, 3),
        "dh": st.integers(1, 2),
        "dw": st.integers(1, 2),
        "pad": st.one_of(
            st.just("valid"),
            st.just("same"),
            st.integers(0, 2),
            st.tuples(st.integers(0, 2), st.integers(0, 2)),
        ),
        "extra_h": st.integers(0, 5),
        "extra_w": st.integers(0, 5),
        "bias": st.booleans(),
    }
)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases, seed=st.integers(0, 2**31 - 1))
def test_from_conv_matches_conv2d(impl: str, case: dict, seed: int) -> None:
    """Unshared copy == the conv: outputs, input grads, and position-summed weight/bias grads."""
    torch.manual_seed(seed)
    c = case
    stride = (c["sh"], c["sw"])
    if c["pad"] == "same":
        stride = (1, 1)
    H = c["dh"] * (c["kh"] - 1) + 1 + c["extra_h"]
    W = c["dw"] * (c["kw"] - 1) + 1 + c["extra_w"]
    conv = nn.Conv2d(c["C"], c["O"], (c["kh"], c["kw"]), stride, c["pad"], (c["dh"], c["dw"]), bias=c["bias"])
    conv = conv.to(F64)
    layer = FreeConv2d.from_conv(conv, (H, W), impl=impl)
    x = torch.randn(c["B"], c["C"], H, W, dtype=F64, requires_grad=True)
    y_ref, y = conv(x), layer(x)
    assert y.shape == y_ref.shape
    assert layer.output_size == tuple(y_ref.shape[2:])
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)
    g = torch.randn_like(y_ref)
    ref_params = [x, conv.weight] + ([conv.bias] if c["bias"] else [])
    params = [x, layer.weight] + ([layer.bias] if c["bias"] else [])
    grads_ref = torch.autograd.grad(y_ref, ref_params, g)
    grads = torch.autograd.grad(y, params, g)
    torch.testing.assert_close(grads[0], grads_ref[0], atol=1e-10, rtol=0)
    # stored layout (oh, ow, kh, kw, in, out): sum over positions -> (kh, kw, in, out)
    torch.testing.assert_close(grads[1].sum((0, 1)).permute(3, 2, 0, 1), grads_ref[1], atol=1e-10, rtol=0)
    if c["bias"]:
        torch.testing.assert_close(grads[2].sum((0, 1)), grads_ref[2], atol=1e-10, rtol=0)


# ---------------------------------------------------------------- vs the explicit loop

LOOP_CASES = [
    # C, O, k, stride, padding, dilation, (H, W), B
    (3, 4, 3, 2, 0, 1, (9, 9), 3),
    (2, 5, (3, 2), (1, 2), 1, (2, 1), (8, 7), 2),
    (4, 3, 2, 1, "same", 1, (6, 5), 2),
    (1, 6, 3, 2, "valid", 1, (13, 13), 4),
    (5, 2, 4, 3, (2, 1), 2, (12, 10), 2),
    (9, 3, 3, 2, 1, (1, 2), (9, 10), 3),  # position-major gather path (C >= 8), padded
    (12, 4, (2, 3), 1, "same", 2, (7, 6), 2),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", LOOP_CASES)
def test_matches_loop_reference_forward_backward(impl: str, case: tuple) -> None:
    C, O, k, stride, padding, dilation, size, B = case
    torch.manual_seed(1)
    layer = FreeConv2d(C, O, k, stride, padding, dilation, input_size=size, impl=impl).to(F64)
    with torch.no_grad():
        layer.bias.normal_()  # non-zero bias, different at every position
    x = torch.randn(B, C, *size, dtype=F64, requires_grad=True)
    g = layer.geometry
    y = layer(x)
    y_ref = loop_reference(x, layer.kernel_view(), layer.bias, (g.sh, g.sw), g.pad, (g.dh, g.dw))
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    grad_out = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, layer.weight, layer.bias], grad_out)
    want = torch.autograd.grad(y_ref, [x, layer.weight, layer.bias], grad_out)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_finite_differences(impl: str) -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 2, 6, 5, dtype=F64, requires_grad=True)
    w = torch.randn(3, 3, 3, 2, 3, 2, dtype=F64, requires_grad=True)  # (oh, ow, O, C, kh, kw)
    b = torch.randn(3, 3, 3, dtype=F64, requires_grad=True)
    fn = lambda x, w, b: free_conv2d(x, w, b, stride=(2, 2), padding=1, dilation=1, impl=impl)  # noqa: E731
    assert fn(x, w, b).shape == (2, 3, 3, 3)
    assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("impl", IMPLS)
def test_functional_expanded_and_permuted_weights(impl: str) -> None:
    """A per-tile kernel expanded to positions gets the summed per-position gradient."""
    torch.manual_seed(3)
    oh = ow = 4
    tile_kernel = torch.randn(2, 2, 3, 2, 3, 3, dtype=F64, requires_grad=True)  # 2x2 tiles of 2x2
    bias = torch.randn(oh, ow, 3, dtype=F64, requires_grad=True)
    x = torch.randn(2, 2, 9, 9, dtype=F64)
    # expand: position (y, x) reads tile (y // 2, x // 2) without copying
    expanded = tile_kernel[:, None, :, None].expand(2, 2, 2, 2, 3, 2, 3, 3).reshape(oh, ow, 3, 2, 3, 3)
    y = free_conv2d(x, expanded, bias, stride=2, padding=0, impl=impl)
    y_ref = loop_reference(x, expanded, bias, (2, 2), (0, 0, 0, 0), (1, 1))
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    g = torch.randn_like(y)
    (gk,) = torch.autograd.grad(y, [tile_kernel], g)
    (gk_ref,) = torch.autograd.grad(y_ref, [tile_kernel], g)
    torch.testing.assert_close(gk, gk_ref, atol=1e-12, rtol=0)
    # a true expand() (stride 0 over positions) as well
    shared = torch.randn(3, 2, 3, 3, dtype=F64, requires_grad=True)
    y2 = free_conv2d(x, shared.expand(oh, ow, 3, 2, 3, 3), None, stride=2, impl=impl)
    torch.testing.assert_close(y2, F.conv2d(x, shared, stride=2), atol=1e-12, rtol=0)
    (gs,) = torch.autograd.grad(y2, [shared], g)
    (gs_ref,) = torch.autograd.grad(F.conv2d(x, shared, stride=2), [shared], g)
    torch.testing.assert_close(gs, gs_ref, atol=1e-12, rtol=0)


def test_input_layouts_give_same_result() -> None:
    """Position-major inputs (the fast output layout) and channels-last give the same numbers."""
    torch.manual_seed(4)
    layer = FreeConv2d(8, 4, 3, 1, input_size=(6, 6)).to(F64)
    x = torch.randn(3, 8, 6, 6, dtype=F64)
    want = layer(x)
    for xx in (
        x.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1),
        x.to(memory_format=torch.channels_last),
    ):
        torch.testing.assert_close(layer(xx), want, atol=1e-12, rtol=0)
    # the output is (B, O, oh, ow) and feeds the next layer / flatten
    out = FreeConv2d(4, 2, 3, input_size=(4, 4)).to(F64)(torch.relu(want))
    assert out.shape == (3, 2, 2, 2)
    assert out.flatten(1).shape == (3, 8)


# ---------------------------------------------------------------- API, views, conversion


def test_kernel_and_bias_views_share_storage() -> None:
    layer = FreeConv2d(3, 5, (3, 2), 2, input_size=(9, 8))
    kv = layer.kernel_view()
    assert kv.shape == (4, 4, 5, 3, 3, 2)
    assert kv.data_ptr() == layer.weight.data_ptr() and kv._base is layer.weight
    with torch.no_grad():
        kv[1, 2, 4, 0, 2, 1] = 7.0
    assert layer.weight[1, 2, 2, 1, 0, 4].item() == 7.0
    assert layer.bias_view() is layer.bias and layer.bias_view().shape == (4, 4, 5)
    assert FreeConv2d(3, 5, 3, bias=False, input_size=(5, 5)).bias_view() is None
    assert layer.output_size == (4, 4)


def test_reference_kernel_buffer() -> None:
    torch.manual_seed(5)
    conv = nn.Conv2d(2, 3, 3, padding="same")
    layer = FreeConv2d.from_conv(conv, (6, 6))
    torch.testing.assert_close(layer.reference_kernel, conv.weight.detach())
    assert layer.reference_kernel.data_ptr() != conv.weight.data_ptr()
    assert "reference_kernel" in layer.state_dict()
    plain = FreeConv2d(2, 3, 3, input_size=(6, 6))
    assert plain.reference_kernel is None and "reference_kernel" not in plain.state_dict()


def test_reference_kernel_loads_into_plain_layer() -> None:
    """A checkpoint of an unshared layer loads into the plain layer a model builder makes."""
    conv = nn.Conv2d(2, 3, 3)
    state = FreeConv2d.from_conv(conv, (6, 6)).state_dict()
    fresh = FreeConv2d(2, 3, 3, input_size=(6, 6))
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.reference_kernel, conv.weight.detach())
    x = torch.randn(2, 2, 6, 6)
    torch.testing.assert_close(fresh(x), conv(x), atol=1e-6, rtol=1e-5)


def test_to_conv_mean_and_spread() -> None:
    torch.manual_seed(6)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    layer = FreeConv2d.from_conv(conv, (7, 7))
    back, spread = layer.to_conv()
    torch.testing.assert_close(back.weight, conv.weight)
    torch.testing.assert_close(back.bias, conv.bias)
    assert (back.stride, back.padding, back.dilation) == (conv.stride, conv.padding, conv.dilation)
    assert spread["kernel_rel_rms_dist"] == pytest.approx(0.0, abs=1e-6)
    assert spread["kernel_std_max"] == pytest.approx(0.0, abs=1e-6)
    # random layer: compare with numpy-free manual statistics
    rand = FreeConv2d(2, 3, 3, stride=2, padding=1, input_size=(7, 7))
    with torch.no_grad():
        rand.bias.normal_()
    conv2, spread2 = rand.to_conv()
    k = rand.kernel_view().detach().reshape(16, 3, 2, 3, 3)
    mean = sum(k[p] for p in range(16)) / 16
    torch.testing.assert_close(conv2.weight, mean)
    torch.testing.assert_close(conv2.bias, rand.bias.detach().reshape(16, 3).mean(0))
    var = sum((k[p] - mean) ** 2 for p in range(16)) / 16
    assert spread2["kernel_std_mean"] == pytest.approx(var.sqrt().mean().item(), rel=1e-5)
    assert spread2["kernel_std_max"] == pytest.approx(var.sqrt().max().item(), rel=1e-5)
    rms = math.sqrt(sum(float(((k[p] - mean) ** 2).sum()) for p in range(16)) / 16)
    assert spread2["kernel_rel_rms_dist"] == pytest.approx(rms / float(mean.norm()), rel=1e-5)
    assert spread2["positions"] == 16


def test_from_conv_rejects_grouped() -> None:
    with pytest.raises(ValueError, match=r"conv\.groups=2 is not allowed"):
        FreeConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2), (6, 6))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"impl": "fast"}, "model.impl"),
        ({"init": "he"}, "model.fcn_init"),
        ({"connectivity": 1.0}, "model.connectivity"),
        ({"connectivity": -0.1}, "model.connectivity"),
        ({"connectivity_mode": "neuron"}, "model.connectivity_mode"),
    ],
)
def test_bad_config_values_raise_config_error(kwargs: dict, key: str) -> None:
    args = {"kernel_size": 3, "input_size": (8, 8), **kwargs}
    with pytest.raises(ConfigError) as err:
        FreeConv2d(2, 3, **args)
    assert err.value.key == key
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"stride": 2, "padding": "same"}, ValueError, "padding='same' is not allowed"),
        ({"padding": "full"}, ValueError, "padding='full' is not allowed"),
        ({"padding": -1}, ValueError, "padding=-1 is not allowed"),
        ({"input_size": (2, 2)}, ValueError, r"input_size=\(2, 2\) is not allowed"),
        ({"kernel_size": 0}, ValueError, "kernel_size=0 is not allowed"),
        ({"kernel_size": 2.5}, TypeError, "kernel_size=2.5 is not allowed"),
        ({"stride": True}, TypeError, "stride=True is not allowed"),
    ],
)
def test_misused_layer_arguments_raise_value_or_type_error(kwargs: dict, error: type, message: str) -> None:
    """Layer arguments are a Python API: ValueError/TypeError, not the config keys' ConfigError."""
    args = {"kernel_size": 3, "input_size": (8, 8), **kwargs}
    with pytest.raises(error, match=message) as err:
        FreeConv2d(2, 3, **args)
    assert not isinstance(err.value, ConfigError)
    assert "\n" not in str(err.value)


def test_wrong_input_shape_is_a_clear_error() -> None:
    layer = FreeConv2d(2, 3, 3, input_size=(8, 8))
    with pytest.raises(ValueError, match=r"expects input \(B, 2, 8, 8\)"):
        layer(torch.randn(1, 2, 9, 8))


def test_same_padding_geometry() -> None:
    layer = FreeConv2d(1, 1, 4, padding="same", dilation=1, input_size=(7, 5))
    assert layer.output_size == (7, 5)
    assert layer.geometry.pad == (1, 2, 1, 2)  # the extra row/column at the bottom/right, like F.conv2d


# ---------------------------------------------------------------- initialisation


def test_glorot_limits_match_protocol() -> None:
    g = FreeConv2d(1, 32, 3, 2, input_size=(28, 28)).geometry  # MNIST layer 1: 13x13 positions
    assert glorot_limit(g, "conv") == pytest.approx(math.sqrt(6 / (9 + 32 * 9)))
    assert glorot_limit(g, "keras") == pytest.approx(math.sqrt(6 / (169 * 9 + 169 * 32)))
    assert glorot_limit(g, "conv") == pytest.approx(0.142, abs=5e-4)
    assert glorot_limit(g, "keras") == pytest.approx(0.0294, abs=5e-4)


@pytest.mark.parametrize("init", ["conv", "keras"])
def test_init_distribution(init: str) -> None:
    torch.manual_seed(7)
    layer = FreeConv2d(32, 64, 3, 2, input_size=(13, 13), init=init)
    w = layer.weight.detach()
    a = glorot_limit(layer.geometry, init)
    assert w.abs().max() <= a and w.abs().max() > 0.99 * a
    assert w.std().item() == pytest.approx(a / math.sqrt(3), rel=0.01)
    assert w.mean().abs().item() < 0.01 * a
    # independent draws at every position: neighbouring kernels are uncorrelated
    kv = layer.kernel_view().detach().reshape(36, -1)
    corr = torch.corrcoef(kv[:2])[0, 1].item()
    assert abs(corr) < 0.05
    assert torch.count_nonzero(layer.bias) == 0


def test_init_follows_global_seed() -> None:
    torch.manual_seed(8)
    a = FreeConv2d(2, 3, 3, input_size=(6, 6)).weight.detach().clone()
    torch.manual_seed(8)
    b = FreeConv2d(2, 3, 3, input_size=(6, 6)).weight.detach()
    assert torch.equal(a, b)


# ---------------------------------------------------------------- variable connection patterns


@pytest.mark.parametrize("p", [0.3, 0.9])
def test_weight_mask_fraction_and_zeros(p: float) -> None:
    layer = FreeConv2d(32, 64, 3, 2, input_size=(13, 13), connectivity=p, mask_seed=11)
    n = layer.weight.numel()
    removed = (~layer.mask).sum().item() / n
    assert abs(removed - p) < 5 * math.sqrt(p * (1 - p) / n)  # binomial, 5 sigma
    assert torch.all(layer.weight[~layer.mask] == 0)
    # independent per weight: the fraction is the same at every position and filter
    per_pos = (~layer.mask).float().mean(dim=(2, 3, 4, 5))
    assert per_pos.std().item() < 5 * math.sqrt(p * (1 - p) / (9 * 32 * 64))


@pytest.mark.parametrize("weight_decay_mode", ["adam_l2", "adamw"])
def test_masked_weights_stay_zero_under_adam(weight_decay_mode: str) -> None:
    torch.manual_seed(12)
    layer = FreeConv2d(3, 4, 3, 1, 1, input_size=(6, 6), connectivity=0.5, mask_seed=3)
    before = layer.weight.detach().clone()
    cls = torch.optim.AdamW if weight_decay_mode == "adamw" else torch.optim.Adam
    opt = cls(layer.parameters(), lr=1.0, weight_decay=0.5)
    for _ in range(50):
        opt.zero_grad()
        x = torch.randn(4, 3, 6, 6)
        loss = (layer(x) - 1.0).pow(2).mean()
        loss.backward()
        assert torch.all(layer.weight.grad[~layer.mask] == 0)
        opt.step()
    assert torch.all(layer.weight[~layer.mask] == 0)
    assert torch.all(opt.state[layer.weight]["exp_avg"][~layer.mask] == 0)
    moved = (layer.weight.detach() != before)[layer.mask].float().mean().item()
    assert moved > 0.99  # the kept weights did train


def test_mask_seeding() -> None:
    kw = {"input_size": (6, 6), "connectivity": 0.4}
    a = FreeConv2d(2, 3, 3, mask_seed=5, **kw).mask
    assert torch.equal(a, FreeConv2d(2, 3, 3, mask_seed=5, **kw).mask)
    assert not torch.equal(a, FreeConv2d(2, 3, 3, mask_seed=6, **kw).mask)
    torch.manual_seed(9)
    b = FreeConv2d(2, 3, 3, **kw).mask
    torch.manual_seed(9)
    assert torch.equal(b, FreeConv2d(2, 3, 3, **kw).mask)
    assert FreeConv2d(2, 3, 3, input_size=(6, 6)).mask is None


def test_connectivity_sweep_shares_weights_and_nests_masks() -> None:
    """One global seed: same initial weights for every p, removed sets nested in p."""
    layers = {}
    for p in (0.0, 0.3, 0.6):
        torch.manual_seed(21)
        layers[p] = FreeConv2d(4, 5, 3, input_size=(7, 7), connectivity=p)
    w0 = layers[0.0].weight.detach()
    for p in (0.3, 0.6):
        m = layers[p].mask
        torch.testing.assert_close(layers[p].weight.detach(), w0 * m)
    removed_03, removed_06 = ~layers[0.3].mask, ~layers[0.6].mask
    assert torch.all(removed_06[removed_03])
    assert removed_06.sum() > removed_03.sum()


def test_mask_survives_save_and_load() -> None:
    torch.manual_seed(10)
    kw = {"input_size": (7, 7), "connectivity": 0.6}
    src = FreeConv2d(2, 3, 3, 2, mask_seed=1, **kw)
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert "mask" in state
    dst = FreeConv2d(2, 3, 3, 2, mask_seed=2, **kw)
    assert not torch.equal(dst.mask, src.mask)
    dst.load_state_dict(state)
    assert torch.equal(dst.mask, src.mask)
    x = torch.randn(2, 2, 7, 7)
    torch.testing.assert_close(dst(x), src(x))
    # a state dict with values under the mask is re-zeroed on load
    state["weight"] = torch.ones_like(state["weight"])
    dst.load_state_dict(state)
    assert torch.all(dst.weight[~dst.mask] == 0) and torch.all(dst.weight[dst.mask] == 1)


def test_input_mask_mode() -> None:
    """One mask over the input units: equal to masking the input of an unmasked layer."""
    torch.manual_seed(13)
    layer = FreeConv2d(3, 4, 3, 2, input_size=(9, 9), connectivity=0.5, connectivity_mode="input", mask_seed=4)
    assert layer.mask is None and layer.input_mask.shape == (3, 9, 9)
    removed = (~layer.input_mask).float().mean().item()
    assert abs(removed - 0.5) < 5 * math.sqrt(0.25 / 243)
    x = torch.randn(5, 3, 9, 9, dtype=F64)
    layer = layer.to(F64)
    g = layer.geometry
    want = loop_reference(x * layer.input_mask, layer.kernel_view(), layer.bias, (2, 2), g.pad, (1, 1))
    torch.testing.assert_close(layer(x), want, atol=1e-12, rtol=0)
    # changing removed input units changes nothing
    x2 = x + 10.0 * (~layer.input_mask)
    torch.testing.assert_close(layer(x2), layer(x), atol=1e-12, rtol=0)
    # a bigger network: big large-scale fraction check over many layers' input units
    big = FreeConv2d(8, 2, 3, input_size=(30, 30), connectivity=0.2, connectivity_mode="input", mask_seed=0)
    frac = (~big.input_mask).float().mean().item()
    assert abs(frac - 0.2) < 5 * math.sqrt(0.16 / big.input_mask.numel())


def test_from_conv_with_connectivity_zeroes_masked_copy() -> None:
    conv = nn.Conv2d(2, 3, 3)
    layer = FreeConv2d.from_conv(conv, (6, 6), connectivity=0.5, mask_seed=0)
    assert torch.all(layer.weight[~layer.mask] == 0)
    kept = layer.kernel_view()[layer.mask.permute(0, 1, 5, 4, 2, 3)]
    full = conv.weight.detach().expand(4, 4, 3, 2, 3, 3)[layer.mask.permute(0, 1, 5, 4, 2, 3)]
    torch.testing.assert_close(kept, full)


# ---------------------------------------------------------------- paper networks


@pytest.mark.parametrize(
    ("data", "depth", "cnn", "fcn"),
    [
        ("mnist", 3, 2_201_098, 4_010_058),
        ("cifar", 3, 2_875_530, 11_103_626),
        # depth 2 (layer 3 dropped), by hand, e.g. MNIST CNN:
        # conv1 320 + conv2 18,496 + fc1 2,304*1024+1024 + fc2 10,250
        ("mnist", 2, 2_389_386, 3_090_506),
        ("cifar", 2, 3_497_866, 9_364_618),
    ],
)
def test_paper_parameter_counts(data: str, depth: int, cnn: int, fcn: int) -> None:
    assert n_params(paper_net(data, "cnn", depth)) == cnn
    assert n_params(paper_net(data, "fcn", depth)) == fcn


def test_paper_net_fcn_from_cnn_is_same_function() -> None:
    torch.manual_seed(14)
    cnn = paper_net("mnist", "cnn", 3).to(F64)
    fcn = nn.Sequential(
        *[
            FreeConv2d.from_conv(m, size) if isinstance(m, nn.Conv2d) else m
            for m, size in zip(cnn, [(28, 28), None, (13, 13), None, (6, 6)] + [None] * 10)
        ]
    )
    x = torch.rand(4, 1, 28, 28, dtype=F64)
    torch.testing.assert_close(fcn(x), cnn(x), atol=1e-10, rtol=0)


# ---------------------------------------------------------------- autocast, compile, torch.func


@pytest.mark.parametrize("impl", IMPLS)
def test_autocast_bf16_cpu(impl: str) -> None:
    torch.manual_seed(15)
    layer = FreeConv2d(8, 16, 3, 2, 1, input_size=(12, 12), impl=impl)
    x = torch.randn(6, 8, 12, 12, requires_grad=True)
    y32 = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    assert ((y.float() - y32).norm() / y32.norm()).item() < 2e-2
    y.float().pow(2).sum().backward()
    assert layer.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    g32 = torch.autograd.grad(y32.pow(2).sum(), [layer.weight])[0]
    assert ((layer.weight.grad - g32).norm() / g32.norm()).item() < 3e-2


@pytest.mark.parametrize("impl", IMPLS)
def test_torch_compile_traces_without_graph_breaks(impl: str) -> None:
    """Dynamo captures the layer (custom autograd.Function included) in one graph."""
    torch._dynamo.reset()
    torch.manual_seed(16)
    layer = FreeConv2d(3, 4, 3, 2, 1, input_size=(9, 9), impl=impl, connectivity=0.3)
    x = torch.randn(5, 3, 9, 9, requires_grad=True)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    y.pow(2).sum().backward()
    gx, gw = x.grad.clone(), layer.weight.grad.clone()
    x.grad = None
    layer.weight.grad = None
    y_ref = layer(x)
    y_ref.pow(2).sum().backward()
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, layer.weight.grad)


@pytest.mark.slow
def test_torch_compile_inductor() -> None:
    torch._dynamo.reset()
    torch.manual_seed(17)
    layer = FreeConv2d(3, 4, 3, 2, 1, input_size=(9, 9))
    x = torch.randn(5, 3, 9, 9)
    torch.testing.assert_close(torch.compile(layer)(x), layer(x), atol=1e-5, rtol=1e-5)


def test_torch_func_grad_and_vmap() -> None:
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(18)
    layer = FreeConv2d(3, 4, 3, 2, 1, input_size=(9, 9), connectivity=0.3).to(F64)
    x = torch.randn(5, 3, 9, 9, dtype=F64)
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss(p: dict, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(layer, p, (xb,)).pow(2).sum()

    g = grad(loss)(params, x)
    layer(x).pow(2).sum().backward()
    torch.testing.assert_close(g["weight"], layer.weight.grad)
    torch.testing.assert_close(g["bias"], layer.bias.grad)
    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, x.unsqueeze(1))
    assert per_sample["weight"].shape == (5, *layer.weight.shape)
    for i in (0, 3):
        gi = torch.autograd.grad(layer(x[i : i + 1]).pow(2).sum(), [layer.weight])[0]
        torch.testing.assert_close(per_sample["weight"][i], gi)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_matches_conv(impl: str, dtype: torch.dtype) -> None:
    torch.manual_seed(19)
    conv = nn.Conv2d(8, 16, 3, 2, 1).cuda()
    layer = FreeConv2d.from_conv(conv, (12, 12), impl=impl)
    x = torch.randn(6, 8, 12, 12, device="cuda")
    torch.testing.assert_close(layer(x), conv(x), atol=1e-4, rtol=1e-4)
    with torch.autocast("cuda", dtype=dtype):
        y, y_ref = layer(x), conv(x)
    assert y.dtype == dtype
    assert ((y.float() - y_ref.float()).norm() / y_ref.float().norm()).item() < 1e-2
