"""The free convolution under ``torch.func``: a batching rule for packs of networks.

A pack (:mod:`weightshare.packed`) runs K networks as one with ``torch.func.vmap`` over
``functional_call``. Without a rule of its own, vmap would push the free convolution's custom
autograd Functions (the gather + batched matmul of ``_free_conv_impls``) to the ``unfold``
implementation, one ``F.unfold`` and einsum with a member dimension, several times slower.
:class:`FreeConvFunction` is the layer's op as a functorch-aware ``autograd.Function``:

- under ``vmap`` its :meth:`~FreeConvFunction.vmap` staticmethod runs the K members' layers as
  one gather of the K*B images and one batched matmul per position and member
  (:func:`~weightshare.layers._free_conv_impls.members_free_conv`), differentiated by the same
  hand-written backward as the single layer;
- under other transforms (``grad``, ``jvp``), its forward and backward are the ``unfold``
  implementation and its vector-Jacobian product, ordinary differentiable ops.

It lives beside the layer so that the layer stays one implementation: the single run and the
pack call the same ``FreeConv2d.forward``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from weightshare.layers._free_conv_geometry import FreeConvGeometry
from weightshare.layers._free_conv_impls import members_free_conv, unfold_einsum

__all__ = ["FreeConvFunction"]


def _batched(t: Tensor | None, dim: int | None, size: int) -> Tensor | None:
    """``t`` with its vmap dimension first (an unbatched tensor expanded to ``size``)."""
    if t is None:
        return None
    return t.movedim(dim, 0) if dim is not None else t.expand(size, *t.shape)


class FreeConvFunction(torch.autograd.Function):
    """``free_conv2d`` (kernel-view weight) with a ``vmap`` rule; see the module docstring."""

    generate_vmap_rule = False

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, g: FreeConvGeometry, impl: str) -> Tensor:  # type: ignore[override]
        return unfold_einsum(x, weight, bias, g)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, bias, g, _ = inputs
        ctx.save_for_backward(x, weight, bias)
        ctx.g = g

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:  # type: ignore[override]
        x, weight, bias = ctx.saved_tensors
        if bias is None:
            _, vjp = torch.func.vjp(lambda a, w: unfold_einsum(a, w, None, ctx.g), x, weight)
            return (*vjp(grad), None, None, None)
        _, vjp = torch.func.vjp(lambda a, w, b: unfold_einsum(a, w, b, ctx.g), x, weight, bias)
        return (*vjp(grad), None, None)

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple, x: Tensor, weight: Tensor, bias: Tensor | None, g: FreeConvGeometry, impl: str
    ) -> tuple[Tensor, int]:  # type: ignore[override]
        k = info.batch_size
        xs, ws, bs = (_batched(t, d, k) for t, d in zip((x, weight, bias), in_dims[:3]))
        assert xs is not None and ws is not None
        return members_free_conv(xs, ws, bs, g, save_patches=impl != "bmm_lowmem"), 0
