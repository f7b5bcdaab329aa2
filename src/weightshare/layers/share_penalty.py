"""Soft weight sharing: an L2 penalty pulling neighbouring positions' filters together.

A free convolution (locally connected layer) has its own filter block at every output
position; a CNN forces all blocks to be equal. Between the two, *soft sharing* leaves the
blocks free but adds ``lambda * penalty`` to the loss, where the penalty grows with the
squared differences between neighbouring blocks. ``lambda = 0`` is the FCN; a large
``lambda`` drives the layer towards a convolution.

Which pairs are compared (each unordered pair exactly once), for ``radius = r``:
    positions ``(i, j)`` and ``(i + d, j)`` (vertical) and ``(i, j)`` and ``(i, j + d)``
    (horizontal) for every ``d`` in ``1..r`` that stays inside the map. Diagonal pairs are
    not compared: with ``r = 1`` these are the 4-neighbourhood edges of the position grid.

Reduction: the **sum** over those pairs of the squared Euclidean distance between the two
blocks (all filters, input channels and kernel taps of the position; the bias is not
included, as in the filter distances of the paper). A sum, not a mean, so ``lambda`` has the
meaning of weight decay on the differences (the gradient on one block,
``2 * lambda * sum_q (w_p - w_q)`` over its compared neighbours ``q``, does not shrink as the
map grows).

What is compared: the kernel the layer computes with (``layers.common.filter_kernel``: a
``FreeConv2d``'s connection mask applied), never the raw stored weights. A removed weight is
then a constant 0 in the penalty, its gradient is exactly 0, and neither the penalty nor Adam
can bring it back (penalising the stored weights would pull it towards its neighbours).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from weightshare.errors import ConfigError
from weightshare.layers.common import check_radius, filter_kernel
from weightshare.layers.share_penalty_l1 import all_pairs_l1

__all__ = ["PENALTY_KINDS", "model_share_penalty", "neighbour_penalty"]


def neighbour_penalty(kernel: Tensor, radius: int = 1) -> Tensor:
    """Sum of squared L2 differences between the filter blocks of neighbouring positions.

    Args:
        kernel: ``(out_h, out_w, ...)``: the first two dimensions index output positions, the
            rest is the block compared (e.g. ``(out_channels, in_channels, kh, kw)`` from
            ``FreeConv2d.effective_kernel()``).
        radius: compare vertical and horizontal pairs at offsets ``1..radius`` (see the module
            docstring for the exact pairs).

    Returns:
        A scalar tensor (same dtype and device as ``kernel``), differentiable; zero when
        every block is equal (a converted CNN) or when the map has a single position.
    """
    radius = check_radius(radius, "model.penalty_radius")
    if kernel.dim() < 2:
        raise ValueError(f"kernel must have shape (out_h, out_w, ...), got {tuple(kernel.shape)}")
    total = kernel.new_zeros(())
    out_h, out_w = kernel.shape[0], kernel.shape[1]
    for d in range(1, radius + 1):
        if d < out_h:
            total = total + (kernel[d:] - kernel[:-d]).pow(2).sum()
        if d < out_w:
            total = total + (kernel[:, d:] - kernel[:, :-d]).pow(2).sum()
    return total


PENALTY_KINDS = ("l2_neighbours", "l1_all_pairs")


def model_share_penalty(module: nn.Module, radius: int = 1, kind: str = "l2_neighbours") -> Tensor:
    """``neighbour_penalty`` of :func:`filter_kernel` summed over every sub-module with ``kernel_view()``.

    ``kind="l1_all_pairs"`` sums :func:`~weightshare.layers.share_penalty_l1.all_pairs_l1`
    (Shakerinava et al. 2024) instead, which has no radius (``model.share_penalty_kind``).

    That covers ``FreeConv2d`` and ``TiledConv2d`` (whose within-tile pairs contribute zero);
    ordinary ``nn.Conv2d`` layers have no positions and are skipped. A module reachable under
    several names is counted once. With no such layer the result is a zero scalar on the
    device of the module's parameters, so ``loss + lambda * penalty`` always works.
    """
    radius = check_radius(radius, "model.penalty_radius")
    if kind not in PENALTY_KINDS:
        raise ConfigError("model.share_penalty_kind", kind, f"one of {list(PENALTY_KINDS)}")
    total: Tensor | None = None
    for sub in module.modules():
        if not callable(getattr(sub, "kernel_view", None)):
            continue
        kernel = filter_kernel(sub)
        term = neighbour_penalty(kernel, radius) if kind == "l2_neighbours" else all_pairs_l1(kernel)
        total = term if total is None else total + term
    if total is None:
        ref = next(module.parameters(), None)
        total = torch.zeros(
            (), device=ref.device if ref is not None else None, dtype=ref.dtype if ref is not None else None
        )
    return total
