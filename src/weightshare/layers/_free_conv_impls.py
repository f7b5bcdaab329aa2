"""Implementations of the free (locally connected) convolution, selectable by name.

All take the input ``x`` (B, C, H, W), the weight in the layer's kernel-view layout
``(oh, ow, out, in, kh, kw)`` (any strides: a permuted view, an ``expand()``-ed tensor, ...),
an optional bias ``(oh, ow, out)`` and a :class:`FreeConvGeometry`, and return (B, out, oh, ow).

Why several: an FCN layer does exactly the FLOPs of the convolution it replaces, so whatever
it loses is overhead (unfolded copies, the scatter of the input gradient, layout changes,
small products). The implementations differ only in that overhead and are kept side by side
so ``scripts/bench_layers.py`` can compare them on the machine at hand:

``unfold``
    ``nn.Unfold`` + ``einsum``: the straightforward layer, plain autograd (also the path used
    under ``torch.func`` transforms, since it is built from ordinary differentiable ops).
``bmm``
    one gather copy of the patches (a strided view of the input's memory, copied once; no
    ``F.unfold``/permute pair) into a position-major block, ``(P, B, K)`` when the input has many
    channels, ``(P, K, B)`` (batch innermost, from ``(C, H, W, B)`` memory) for the image itself,
    so that the copy moves long contiguous runs; then one batched matmul over positions with the
    weight already laid out ``(P, K, O)``. A custom autograd Function computes the weight
    gradient as one more batched matmul and the input gradient as one batched matmul plus
    ``kh*kw`` strided in-place adds (no ``F.fold``/scatter). The output is returned as a
    (B, O, oh, ow) *view* of position-major memory, which the next free convolution gathers
    from without a layout copy.
``bmm_lowmem``
    the same, but saves only the input and weight for backward and gathers the patches again
    (less memory, one more gather).
``offset``
    per kernel offset (i, j): the strided slice of the input is multiplied into the output
    (``kh*kw`` batched matmuls with ``in_channels`` as inner size), never building the patch
    block; saves only input and weight.

The weight's canonical internal layout is ``(oh, ow, kh, kw, in, out)``: then
``(P, kh*kw*in, out)`` is a free view, and :class:`FreeConv2d` stores its parameter that way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from weightshare.layers._free_conv_geometry import FreeConvGeometry


class Spec(NamedTuple):
    """What the autograd Functions need of the geometry (a tuple, so it can sit on ``ctx``)."""

    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    oh: int
    ow: int
    batch_inner: bool  # patches gathered batch-innermost (see _prepare_input)
    members: int = 1  # K networks' batches side by side in the input (see members_free_conv)


# Inputs with fewer channels are gathered batch-innermost (see _prepare_input).
_TRANSPOSE_MIN_CHANNELS = 8


def weight_to_pko(weight: Tensor, g: FreeConvGeometry) -> Tensor:
    """Kernel-view ``(oh, ow, O, C, kh, kw)`` -> ``(P, kh*kw*C, O)`` (a view for the stored layout)."""
    return weight.permute(0, 1, 4, 5, 3, 2).reshape(g.positions, g.fan, g.out_channels)


def _spec(g: FreeConvGeometry, batch_inner: bool, members: int = 1) -> Spec:
    return Spec(g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.out_h, g.out_w, batch_inner, members)


def _window(spec: Spec, i: int, j: int) -> tuple[slice, slice]:
    """Rows and columns of a padded (Hp, Wp, ...) input that kernel offset (i, j) sees at every position."""
    rows = slice(i * spec.dh, i * spec.dh + spec.sh * (spec.oh - 1) + 1, spec.sh)
    cols = slice(j * spec.dw, j * spec.dw + spec.sw * (spec.ow - 1) + 1, spec.sw)
    return rows, cols


def _prepare_input(x: Tensor, g: FreeConvGeometry) -> tuple[Tensor, bool]:
    """Pad, and choose the memory layout that makes the patch gather a copy of long runs.

    Returns a padded (B, C, Hp, Wp) tensor (possibly a permuted view of another layout) and
    whether the patches are to be gathered batch-innermost. Plain autograd ops, so the
    Functions below see an already padded input and never deal with padding.

    * many channels: position-major ``(H, W, B, C)`` memory (what the previous free convolution
      outputs, so usually no copy), patches ``(P, B, K)``: runs of C contiguous values;
    * few channels (the image itself): ``(C, H, W, B)`` memory, patches ``(P, K, B)``: runs of B
      values. A ``C``-innermost gather of a 1- or 3-channel image moves 1-3 values per run and
      is several times slower.
    """
    batch_inner = x.shape[1] < _TRANSPOSE_MIN_CHANNELS
    order = (1, 2, 3, 0) if batch_inner else (2, 3, 0, 1)
    back = (3, 0, 1, 2) if batch_inner else (2, 3, 0, 1)
    if g.has_padding:
        t, b, l, r = g.pad
        pad = (0, 0, l, r, t, b) if batch_inner else (0, 0, 0, 0, l, r, t, b)
        # Padding the permuted view writes the padded tensor in that layout in one copy.
        return F.pad(x.permute(*order), pad).permute(*back), batch_inner
    xp = x.permute(*order)
    if not xp.is_contiguous():
        x = xp.contiguous().permute(*back)
    return x, batch_inner


def _patch_view(x: Tensor, spec: Spec) -> Tensor:
    """(oh, ow, B, kh, kw, C) strided view of the patches of a padded (B, C, Hp, Wp) input.

    Built from view ops only (``Tensor.unfold`` makes sliding windows without copying), so
    ``torch.compile`` traces it; the dilation is a step slice of each window.
    """
    kh, kw, sh, sw, dh, dw, oh, ow, *_ = spec  # a NamedTuple unpacks in field order
    v = x.permute(2, 3, 0, 1).unfold(0, dh * (kh - 1) + 1, sh).unfold(1, dw * (kw - 1) + 1, sw)
    return v[:oh, :ow, :, :, ::dh, ::dw].permute(0, 1, 2, 4, 5, 3)


def _gather(x: Tensor, spec: Spec) -> Tensor:
    """Patches as a (P, B, kh*kw*C) matrix per position: the only copy of the forward pass.

    Stored contiguously either as ``(P, B, K)`` or, when ``spec`` asks for batch-innermost, as
    ``(P, K, B)`` and returned transposed (a view): ``bmm`` takes either without a copy.
    With ``spec.members`` = M networks, the batch holds M member batches one after the other
    and the result is ``(P*M, B/M, K)``: one matrix per position and member.
    """
    kh, kw, oh, ow, batch_inner = spec.kh, spec.kw, spec.oh, spec.ow, spec.batch_inner
    B, K = x.shape[0], kh * kw * x.shape[1]
    v = _patch_view(x, spec)
    if batch_inner:
        out = v.permute(0, 1, 3, 4, 5, 2).reshape(oh * ow, K, B).transpose(1, 2)
    else:
        out = v.reshape(oh * ow, B, K)
    if spec.members > 1:  # (P, M*b, K) -> (P*M, b, K); a copy only for the batch-innermost layout
        out = out.reshape(oh * ow * spec.members, B // spec.members, K)
    return out


def _offset_slice(x: Tensor, spec: Spec, i: int, j: int) -> Tensor:
    """(oh, ow, B, C) strided view of the inputs seen by kernel offset (i, j) at every position."""
    return x.permute(2, 3, 0, 1)[_window(spec, i, j)]


def _scatter_input_grad(dpatches: Tensor, x_shape: torch.Size, spec: Spec) -> Tensor:
    """Sum patch gradients (P, B, kh*kw*C) back onto the padded input.

    ``kh*kw`` strided in-place adds into position-major memory (each a dense elementwise add),
    instead of ``F.fold``'s scatter; returns a (B, C, Hp, Wp) view.
    """
    B, C, Hp, Wp = x_shape
    d6 = dpatches.view(spec.oh, spec.ow, B, spec.kh, spec.kw, C)
    buf = dpatches.new_zeros(Hp, Wp, B, C)
    for i in range(spec.kh):
        for j in range(spec.kw):
            buf[_window(spec, i, j)].add_(d6[:, :, :, i, j, :])
    return buf.permute(2, 3, 0, 1)


def _bias_grad(g: Tensor) -> Tensor:
    return g.sum(1)


class _GatherBmm(torch.autograd.Function):
    """Gather + batched matmul over positions.

    ``save_patches=True`` (``bmm``) keeps the gathered patches for the weight gradient;
    ``False`` (``bmm_lowmem``) keeps only the (padded) input and gathers again in backward:
    less memory for one more gather. Everything else is the same code.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, spec: Spec, save_patches: bool) -> Tensor:  # type: ignore[override]
        patches = _gather(x, spec)
        out = torch.bmm(patches, w) if b is None else torch.baddbmm(b.unsqueeze(1), patches, w)
        ctx.save_for_backward(patches if save_patches else x, w)
        ctx.spec = spec
        ctx.x_shape = x.shape
        ctx.save_patches = save_patches
        return out

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        saved, w = ctx.saved_tensors
        g = g.contiguous()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dpatches = torch.bmm(g, w.transpose(1, 2))  # (P*M, b, K) -> (P, M*b, K)
            dpatches = dpatches.view(ctx.spec.oh * ctx.spec.ow, ctx.x_shape[0], dpatches.shape[-1])
            dx = _scatter_input_grad(dpatches, ctx.x_shape, ctx.spec)
        if ctx.needs_input_grad[1]:
            patches = saved if ctx.save_patches else _gather(saved, ctx.spec)
            dw = torch.bmm(patches.transpose(1, 2), g)
        if ctx.needs_input_grad[2]:
            db = _bias_grad(g)
        return dx, dw, db, None, None


class _OffsetAccumulate(torch.autograd.Function):
    """Per kernel offset accumulation: ``kh*kw`` batched matmuls, no patch block."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, spec: Spec) -> Tensor:  # type: ignore[override]
        kh, kw, oh, ow = spec.kh, spec.kw, spec.oh, spec.ow
        B, C = x.shape[0], x.shape[1]
        P, O = oh * ow, w.shape[2]
        w5 = w.view(P, kh, kw, C, O)
        out = w.new_zeros(P, B, O) if b is None else b.unsqueeze(1).expand(P, B, O).contiguous()
        for i in range(kh):
            for j in range(kw):
                xs = _offset_slice(x, spec, i, j).reshape(P, B, C)
                out.baddbmm_(xs, w5[:, i, j])
        ctx.save_for_backward(x, w)
        ctx.spec = spec
        return out

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, w = ctx.saved_tensors
        kh, kw, oh, ow = ctx.spec.kh, ctx.spec.kw, ctx.spec.oh, ctx.spec.ow
        B, C, Hp, Wp = x.shape
        P, O = oh * ow, w.shape[2]
        g = g.contiguous()
        w5 = w.view(P, kh, kw, C, O)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            buf = g.new_zeros(Hp, Wp, B, C)
        if ctx.needs_input_grad[1]:
            dw = w.new_empty(P, kh, kw, C, O)
        for i in range(kh):
            for j in range(kw):
                if ctx.needs_input_grad[1]:
                    xs = _offset_slice(x, ctx.spec, i, j).reshape(P, B, C)
                    dw[:, i, j].copy_(torch.bmm(xs.transpose(1, 2), g))
                if ctx.needs_input_grad[0]:
                    part = torch.bmm(g, w5[:, i, j].transpose(1, 2)).view(oh, ow, B, C)
                    buf[_window(ctx.spec, i, j)].add_(part)
        if ctx.needs_input_grad[0]:
            dx = buf.permute(2, 3, 0, 1)
        if dw is not None:
            dw = dw.view(P, kh * kw * C, O)
        if ctx.needs_input_grad[2]:
            db = _bias_grad(g)
        return dx, dw, db, None


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast compute dtype active for this device type, or None.

    The custom Functions run their matmuls on whatever dtype they are given, so the cast that
    autocast would apply to ``bmm`` is done here, outside them, as ordinary (differentiable) ops.
    """
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _autocast_operands(x: Tensor, w: Tensor, b: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Cast to the autocast dtype (see :func:`_autocast_dtype`), or check that the dtypes agree."""
    dtype = _autocast_dtype(x.device.type)
    if dtype is not None:
        return x.to(dtype), w.to(dtype), None if b is None else b.to(dtype)
    if x.dtype != w.dtype:
        raise TypeError(f"free_conv2d: input dtype {x.dtype} != weight dtype {w.dtype} (outside autocast)")
    return x, w, b


def members_free_conv(
    x: Tensor, weight: Tensor, bias: Tensor | None, g: FreeConvGeometry, save_patches: bool
) -> Tensor:
    """M networks' free convolutions in one gather and one batched matmul (the ``bmm`` impl).

    ``x`` is (M, B, C, H, W), ``weight`` (M, oh, ow, out, in, kh, kw), ``bias`` (M, oh, ow, out)
    or None; returns (M, B, out, oh, ow). The M batches are gathered as one batch of M*B
    images; the matmul has one (B, K) x (K, out) product per position and member. This is the
    batching rule of :func:`weightshare.layers.free_conv.free_conv2d` under ``torch.func.vmap``
    (:mod:`weightshare.layers.free_conv_batched`), what a pack of networks runs.
    """
    M, B = x.shape[0], x.shape[1]
    P, F_, O = g.positions, g.fan, g.out_channels
    # (M, oh, ow, O, C, kh, kw) -> (P, M, kh*kw*C, O) -> (P*M, K, O): position-major, like the patches
    w = weight.permute(0, 1, 2, 5, 6, 4, 3).reshape(M, P, F_, O).transpose(0, 1).reshape(P * M, F_, O)
    b = None if bias is None else bias.reshape(M, P, O).transpose(0, 1).reshape(P * M, O)
    xm, w, b = _autocast_operands(x.reshape(M * B, *x.shape[2:]), w, b)
    xs, batch_inner = _prepare_input(xm, g)
    out = _GatherBmm.apply(xs, w, b, _spec(g, batch_inner, M), save_patches)  # (P*M, B, O)
    return out.view(g.out_h, g.out_w, M, B, O).permute(2, 3, 4, 0, 1)


def _function_impl(name: str, fn: type[torch.autograd.Function], *extra: object) -> Callable[..., Tensor]:
    """The ``IMPLS`` entry running ``fn`` (``extra``: its trailing non-tensor arguments)."""

    def run(x: Tensor, weight: Tensor, bias: Tensor | None, g: FreeConvGeometry) -> Tensor:
        w = weight_to_pko(weight, g)
        b = None if bias is None else bias.reshape(g.positions, g.out_channels)
        x, w, b = _autocast_operands(x, w, b)
        xs, batch_inner = _prepare_input(x, g)
        out = fn.apply(xs, w, b, _spec(g, batch_inner), *extra)
        # (P, B, O) -> (B, O, oh, ow) as a view of position-major memory.
        return out.view(g.out_h, g.out_w, x.shape[0], g.out_channels).permute(2, 3, 0, 1)

    run.__name__ = f"free_conv_{name}"
    return run


def unfold_einsum(x: Tensor, weight: Tensor, bias: Tensor | None, g: FreeConvGeometry) -> Tensor:
    """Baseline: ``F.unfold`` (im2col) + ``einsum`` over positions, plain autograd."""
    t, b_, l, r = g.pad
    if g.has_padding:
        x = F.pad(x, (l, r, t, b_))
    cols = F.unfold(x, (g.kh, g.kw), dilation=(g.dh, g.dw), stride=(g.sh, g.sw))  # (B, C*kh*kw, P)
    w = weight.reshape(g.positions, g.out_channels, g.fan)  # K ordered (c, i, j) like unfold
    out = torch.einsum("bkp,pok->bop", cols, w)
    if bias is not None:
        out = out + bias.reshape(g.positions, g.out_channels).t().to(out.dtype)
    return out.reshape(x.shape[0], g.out_channels, g.out_h, g.out_w)


IMPLS: dict[str, Callable[[Tensor, Tensor, Tensor | None, FreeConvGeometry], Tensor]] = {
    "unfold": unfold_einsum,
    "bmm": _function_impl("bmm", _GatherBmm, True),
    "bmm_lowmem": _function_impl("bmm_lowmem", _GatherBmm, False),
    "offset": _function_impl("offset", _OffsetAccumulate),
}
