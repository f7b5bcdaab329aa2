"""The free convolution of K members at once: one gather and one batched matmul over members x positions.

Why a custom autograd Function and not ``torch.func.vmap`` over ``FreeConv2d``: under
functorch transforms the layer falls back to ``F.unfold`` + ``einsum`` (its custom Functions
have no batching rule), whose backward is ``F.fold``'s scatter: several times slower than
the single run's ``bmm`` implementation, so a pack would lose to running its members one
after another. Here the member dimension is folded into the batched matmul's batch (K x P
independent (B, F) @ (F, O) products, exactly the single layer's work K times over, in
one kernel launch), and the input gradient is ``kh*kw`` strided in-place adds, as in
:mod:`weightshare.layers._free_conv_impls` (whose ``_GatherBmm`` this mirrors with a
leading member dimension).

Layouts: input (K, B, C, H, W) with any strides (the previous free layer's output is a
view of member- and position-major memory ``(K, H, W, B, C)``, which the gather reads as
contiguous runs); weight (K*P, kh*kw*C, O); bias (K*P, O); output (K, B, O, oh, ow) as a
view of ``(K, oh, ow, B, O)`` memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from weightshare.layers._free_conv_geometry import FreeConvGeometry

__all__ = ["stacked_free_conv"]

# (kh, kw, sh, sw, dh, dw, oh, ow)
_Spec = tuple[int, int, int, int, int, int, int, int]


def _patch_block(x: Tensor, spec: _Spec) -> Tensor:
    """Patches of a padded (K, B, C, Hp, Wp) input as one (K*P, B, kh*kw*C) block (the one copy)."""
    kh, kw, sh, sw, dh, dw, oh, ow = spec
    K, B, C = x.shape[0], x.shape[1], x.shape[2]
    v = x.permute(0, 3, 4, 1, 2).unfold(1, dh * (kh - 1) + 1, sh).unfold(2, dw * (kw - 1) + 1, sw)
    v = v[:, :oh, :ow, :, :, ::dh, ::dw]  # (K, oh, ow, B, C, kh, kw)
    return v.permute(0, 1, 2, 3, 5, 6, 4).reshape(K * oh * ow, B, kh * kw * C)


class _StackedGatherBmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, spec: _Spec) -> Tensor:  # type: ignore[override]
        patches = _patch_block(x, spec)
        out = torch.bmm(patches, w) if b is None else torch.baddbmm(b.unsqueeze(1), patches, w)
        ctx.save_for_backward(patches, w)
        ctx.spec = spec
        ctx.x_shape = x.shape
        return out

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        patches, w = ctx.saved_tensors
        kh, kw, sh, sw, dh, dw, oh, ow = ctx.spec
        K, B, C, Hp, Wp = ctx.x_shape
        g = g.contiguous()
        dx = dw_ = db = None
        if ctx.needs_input_grad[0]:
            d7 = torch.bmm(g, w.transpose(1, 2)).view(K, oh, ow, B, kh, kw, C)
            buf = g.new_zeros(K, Hp, Wp, B, C)
            for i in range(kh):
                for j in range(kw):
                    buf[:, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw].add_(
                        d7[:, :, :, :, i, j, :]
                    )
            dx = buf.permute(0, 3, 4, 1, 2)
        if ctx.needs_input_grad[1]:
            dw_ = torch.bmm(patches.transpose(1, 2), g)
        if ctx.needs_input_grad[2]:
            db = g.sum(1)
        return dx, dw_, db, None


def stacked_free_conv(x: Tensor, weight: Tensor, bias: Tensor | None, g: FreeConvGeometry) -> Tensor:
    """Free convolution of K members: ``x`` (K, B, C, H, W), ``weight`` (K, P, kh*kw*C, O) with
    the fan ordered ``(kh, kw, C)`` (``FreeConv2d``'s stored layout flattened), ``bias``
    (K, P, O) or None. Returns (K, B, O, oh, ow).

    Under autocast the inputs are cast to the autocast dtype here, outside the Function, as
    the single layer does.
    """
    K, B = x.shape[0], x.shape[1]
    w = weight.reshape(K * g.positions, g.fan, g.out_channels)
    b = None if bias is None else bias.reshape(K * g.positions, g.out_channels)
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, w = x.to(dtype), w.to(dtype)
        b = None if b is None else b.to(dtype)
    elif x.dtype != w.dtype:
        raise TypeError(f"stacked_free_conv: input dtype {x.dtype} != weight dtype {w.dtype} (outside autocast)")
    if g.has_padding:
        t, bo, left, r = g.pad
        x = F.pad(x, (left, r, t, bo))
    spec: _Spec = (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.out_h, g.out_w)
    out = _StackedGatherBmm.apply(x, w, b, spec)
    return out.view(K, g.out_h, g.out_w, B, g.out_channels).permute(0, 3, 4, 1, 2)
