"""The low-rank locally connected layer (``LowRankConv2d``) of K members at once.

The single layer is one ``F.conv2d`` with ``R * out`` filters (the bases), whose output
``(B, R, out, oh, ow)`` is summed over ``r`` with the combining weights ``a_r(i, j)``, plus
the filter bias and the spatial bias. With K members the bases of all members are one
grouped convolution (``groups=K`` over ``K * R * out`` filters, activations laid out
``(B, K*C, H, W)`` as the CNN path of :mod:`.stacked_net`, so consecutive layers need no
reshuffle), and the combine is the same broadcast multiply and sum over ``r`` with a leading
member dimension: ``(B, K, R, out, oh, ow) * (K, R, 1, oh, ow)`` summed over ``R``. Each
member's arithmetic is its single layer's (the same reductions in the same order), so a
pack reproduces its members' single runs (``tests/test_packed_spectrum.py``).

Stacked parameter names are the layer's own (``<layer>.bases``, ``.combining_logits`` or
``.combining_row`` / ``.combining_col``, ``.bias``, ``.bias_spatial`` or ``.bias_row`` /
``.bias_col``), each with a leading K, so :meth:`StackedPaperNet.write_member` writes the
single run's ``net.*`` state-dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from weightshare.layers.lowrank_conv import LowRankConv2d, normalize_combining

__all__ = ["stacked_combining_weights", "stacked_lowrank_conv", "stacked_lowrank_kernel"]


def _logits(params: dict[str, Tensor], name: str, mod: LowRankConv2d) -> Tensor:
    """``LowRankConv2d.logits`` of every member: (K, oh, ow, R)."""
    if mod.combining == "full":
        return params[f"{name}.combining_logits"]
    return params[f"{name}.combining_row"][:, :, None, :] + params[f"{name}.combining_col"][:, None, :, :]


def stacked_combining_weights(params: dict[str, Tensor], name: str, mod: LowRankConv2d) -> Tensor:
    """``LowRankConv2d.combining_weights`` of every member: (K, oh, ow, R), normalised over R."""
    return normalize_combining(_logits(params, name, mod), mod.normalize)


def stacked_lowrank_kernel(params: dict[str, Tensor], name: str, mod: LowRankConv2d) -> Tensor:
    """``effective_kernel`` of every member: (K, oh, ow, out, in, kh, kw)."""
    a = stacked_combining_weights(params, name, mod)
    return torch.einsum("khwr,kroicd->khwoicd", a, params[f"{name}.bases"])


def _spatial_bias(params: dict[str, Tensor], name: str, mod: LowRankConv2d) -> Tensor | None:
    """(K, oh, ow) spatial bias, or None."""
    if not mod.spatial_bias:
        return None
    if mod.combining == "full":
        return params[f"{name}.bias_spatial"]
    return params[f"{name}.bias_row"][:, :, None] + params[f"{name}.bias_col"][:, None, :]


def stacked_lowrank_conv(h: Tensor, params: dict[str, Tensor], name: str, mod: LowRankConv2d) -> Tensor:
    """``h`` (B, K*C, H, W) -> (B, K*out, oh, ow): every member's ``LowRankConv2d`` forward."""
    g = mod.geometry
    top, bottom, left, right = g.pad
    if (top, left) != (bottom, right):  # as the single layer: pad asymmetrically first
        h = F.pad(h, (left, right, top, bottom))
        top = left = 0
    bases = params[f"{name}.bases"]  # (K, R, O, C, kh, kw)
    K, R, O = bases.shape[0], bases.shape[1], bases.shape[2]
    bank = bases.reshape(K * R * O, g.in_channels, g.kh, g.kw)
    y = F.conv2d(h, bank, None, mod.stride, (top, left), mod.dilation, groups=K)  # (B, K*R*O, oh, ow)
    B = y.shape[0]
    oh, ow = mod.output_size
    a = stacked_combining_weights(params, name, mod).to(y.dtype).permute(0, 3, 1, 2)  # (K, R, oh, ow)
    y = y.view(B, K, R, O, oh, ow)
    out = (y * a[None, :, :, None]).sum(2) if R > 1 else y[:, :, 0] * a[None]  # (B, K, O, oh, ow)
    bias = params.get(f"{name}.bias")
    if bias is not None:
        out = out + bias.to(out.dtype)[None, :, :, None, None]
    spatial = _spatial_bias(params, name, mod)  # independent of the filter bias, as the single layer
    if spatial is not None:
        out = out + spatial.to(out.dtype)[None, :, None]
    return out.reshape(B, K * O, oh, ow)
