"""The layers under ``torch.func.vmap``, as a pack runs them: one network's code over K members.

The free convolution's batching rule (``layers/free_conv_batched.py``) gives each member's
forward and gradients exactly (float64); every paper network and the ResNets run under vmap
without a batching-rule fallback (PyTorch warns when it has to loop over the members).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch.func import functional_call, vmap

from weightshare.layers import FreeConv2d
from weightshare.layers.free_conv import free_conv2d
from weightshare.layers.lowrank_conv import LowRankConv2d
from weightshare.layers.tiled_conv import TiledConv2d

K = 3


def _vmapped(nets: list[torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
    params = {n: torch.stack([dict(m.named_parameters())[n] for m in nets]) for n, _ in nets[0].named_parameters()}
    buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in nets]) for n, _ in nets[0].named_buffers()}
    base = copy.deepcopy(nets[0]).to("meta")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "There is a performance drop ... batching rule" fails the test
        return vmap(lambda p, b, xi: functional_call(base, (p, b), (xi,)))(params, buffers, x)


LAYERS = {
    "bmm_padded_image": lambda: FreeConv2d(1, 4, 5, padding=2, input_size=(12, 12)),
    "bmm_strided": lambda: FreeConv2d(8, 4, 3, stride=2, input_size=(9, 9)),
    "bmm_dilated_nobias": lambda: FreeConv2d(8, 4, 3, dilation=2, bias=False, input_size=(9, 9)),
    "bmm_lowmem": lambda: FreeConv2d(8, 4, 3, padding=1, input_size=(9, 9), impl="bmm_lowmem"),
    "offset": lambda: FreeConv2d(3, 4, 3, padding=1, input_size=(7, 7), impl="offset"),
    "unfold": lambda: FreeConv2d(3, 4, 3, padding=1, input_size=(7, 7), impl="unfold"),
    "weight_mask": lambda: FreeConv2d(8, 4, 3, padding=1, input_size=(9, 9), connectivity=0.3),
    "input_mask": lambda: FreeConv2d(
        8, 4, 3, padding=1, input_size=(9, 9), connectivity=0.3, connectivity_mode="input"
    ),
    "tiled": lambda: TiledConv2d(8, 4, 3, padding=1, input_size=(9, 9), tile=2),
    "lowrank_full": lambda: LowRankConv2d(3, 4, 3, padding=1, input_size=(7, 7), rank=3),
    "lowrank_factorized": lambda: LowRankConv2d(3, 4, 3, padding=1, input_size=(7, 7), rank=2, combining="factorized"),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_vmapped_layer_equals_each_member_forward_and_backward(name, monkeypatch):
    import weightshare.layers.free_conv_batched as batched

    calls: list[int] = []
    rule = batched.members_free_conv
    monkeypatch.setattr(batched, "members_free_conv", lambda *a, **kw: calls.append(1) or rule(*a, **kw))
    torch.manual_seed(0)
    nets = [LAYERS[name]().double() for _ in range(K)]
    c, (h, w) = nets[0].in_channels, nets[0].input_size
    x = torch.randn(K, 5, c, h, w, dtype=torch.float64, requires_grad=True)
    out = _vmapped(nets, x)  # the members' parameters are stacked in the graph: they get the gradients
    g = torch.randn_like(out)
    (out * g).sum().backward()
    packed = [[p.grad.clone() for p in net.parameters()] for net in nets]
    # the free layers ran the batching rule (one gather + bmm for all members), not a fallback
    assert bool(calls) == (name not in ("unfold", "lowrank_full", "lowrank_factorized"))
    for k, net in enumerate(nets):
        net.zero_grad()
        xk = x.detach()[k].clone().requires_grad_(True)
        ref = net(xk)
        torch.testing.assert_close(out[k], ref, atol=1e-12, rtol=0)
        ref.backward(g[k])
        torch.testing.assert_close(x.grad[k], xk.grad, atol=1e-12, rtol=0)
        for got, p in zip(packed[k], net.parameters()):
            torch.testing.assert_close(got, p.grad, atol=1e-12, rtol=0)


def test_free_conv_under_grad_transform_uses_the_unfold_form():
    """Under ``torch.func.grad`` (no vmap) the op is differentiated through its ``unfold`` form."""
    torch.manual_seed(1)
    layer = FreeConv2d(2, 3, 3, padding=1, input_size=(6, 6)).double()
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    w, b = layer.kernel_view().detach(), layer.bias.detach()

    def loss(w_):
        return free_conv2d(x, w_, b, padding=1).square().sum()

    wr = w.clone().requires_grad_(True)
    loss(wr).backward()
    torch.testing.assert_close(torch.func.grad(loss)(w), wr.grad, atol=1e-12, rtol=0)


@pytest.mark.parametrize("model", ["cnn", "fcn", "lowrank", "resnet"])
def test_networks_run_under_vmap_without_a_fallback(compose, model):
    from weightshare.builders import build_model
    from weightshare.data.dataset import DataInfo

    extra = ["model.arch=wide", "model.depth=10"] if model == "resnet" else []
    cfg = compose([f"model={model}", "model.hidden=16", *extra] if model != "resnet" else [f"model={model}", *extra])
    info = DataInfo("synthetic", 1, 28, 28, 10)
    nets = [build_model(cfg.model, info).double() for _ in range(2)]
    x = torch.rand(2, 3, 1, 28, 28, dtype=torch.float64)
    out = _vmapped(nets, x)
    for k, net in enumerate(nets):
        net.train()
        torch.testing.assert_close(out[k], net(x[k]), atol=1e-10, rtol=0)
