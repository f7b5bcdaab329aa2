"""Dynamic weight sharing (Pogodin, Mehta, Lillicrap, Latham, NeurIPS 2021): periodic re-sharing.

"Towards Biologically Plausible Convolutional Networks" trains a locally connected network
and every so often pauses it for a sharing phase that pulls each position's kernel towards
the kernels of its pool. This module applies that phase in its averaging form,

    W_p <- (1 - a) W_p + a * mean_{q in G(p)} W_q,

for every output position ``p`` of a free layer at once (all positions updated from the same
old kernels), where the group ``G(p)`` is every position of the layer (``radius=None``) or the
positions within Chebyshev distance ``radius`` of ``p`` (clipped at the map's border, ``p``
itself included). ``a = 1`` with the global group re-shares exactly: every position gets the
mean kernel, i.e. the layer becomes a convolution. The bias is re-shared the same way (a
convolution shares it too), although the filter distances only read the kernel.

Relation to their sleep phase, as we read the paper: during "sleep" every position of a pool
receives the same input pattern (generated through lateral connections of the input layer),
lateral connections in the output layer drive each neuron towards the pool's mean response,
and a Hebbian rule moves each neuron's weights towards what it was driven to. Averaged over
many random input patterns (with identity covariance) one sleep iteration is, to first
order, the update above with ``a`` equal to the Hebbian learning rate; many iterations
compound it, ``a_total = 1 - (1 - a)^n``. We implement that expected update directly. The
stochastic Hebbian phase itself (finite input patterns, their lateral dynamics and rates) is
not offered: reproducing it faithfully needs the details of their lateral-connection model,
which the issue's averaging form abstracts away.

Connection masks stay exact: a ``FreeConv2d`` is read through its effective kernel (removed
weights count as 0 in the means), and only kept weights are written (weight mode: removed
weights stay exactly 0; input mode: weights reading a removed input keep their value, as
the layer never uses them).

A ``LowRankConv2d`` (``combining="full"``) is re-shared in the space of its combining weights:
its kernels ``sum_r a_r(p) K_r`` are linear in ``a``, so averaging ``a`` over the group
averages the kernels exactly. With the softmax normalisation the new weights are a convex
combination of probability vectors, hence positive, and ``log`` of them are logits whose
softmax gives them back exactly. A factorised layer cannot hold an arbitrary average (a
row term plus a column term), so it is rejected; a ``TiledConv2d`` too (its tiles share already).

Why hand-written: no library applies this update. The neighbourhood mean is one
``avg_pool2d`` with ``count_include_pad=False`` (exactly the clipped-window mean).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightshare.layers.common import check_radius
from weightshare.layers.free_conv import FreeConv2d
from weightshare.layers.lowrank_conv import LowRankConv2d

__all__ = ["dynamic_share_", "group_mean", "share_layer_"]


def group_mean(grid: Tensor, radius: int | None = None) -> Tensor:
    """``mean_{q in G(p)} grid[q]`` for every position ``p`` of ``grid`` ``(out_h, out_w, ...)``.

    ``radius=None``: the mean over all positions (broadcast back to the grid's shape); else the
    mean over the positions within Chebyshev distance ``radius`` inside the map.
    """
    if grid.dim() < 2:
        raise ValueError(f"grid must be (out_h, out_w, ...), got shape {tuple(grid.shape)}")
    if radius is None:
        return grid.mean(dim=(0, 1), keepdim=True).expand_as(grid)
    r = check_radius(radius, "model.dynamic_sharing.radius")
    oh, ow = grid.shape[0], grid.shape[1]
    flat = grid.reshape(oh, ow, -1).permute(2, 0, 1).unsqueeze(0)  # (1, D, oh, ow)
    pooled = F.avg_pool2d(flat, 2 * r + 1, stride=1, padding=r, count_include_pad=False)
    return pooled.squeeze(0).permute(1, 2, 0).reshape(grid.shape)


def _pull(grid: Tensor, strength: float, radius: int | None) -> Tensor:
    return torch.lerp(grid, group_mean(grid, radius), strength)


def _check_strength(strength: float) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 < float(strength) <= 1.0:
        raise ValueError(f"dynamic sharing strength must be a number in (0, 1], got {strength!r}")
    return float(strength)


@torch.no_grad()
def share_layer_(layer: nn.Module, strength: float, radius: int | None = None) -> None:
    """Apply one sharing step to ``layer`` in place (see the module docstring)."""
    a = _check_strength(strength)
    if isinstance(layer, FreeConv2d):
        # stored (oh, ow, kh, kw, in, out): the same positions first, so the means are the same
        stored = layer.weight
        keep = layer.mask if layer.mask is not None else layer.input_weight_mask()
        effective = stored if keep is None else stored * keep
        new = _pull(effective, a, radius)
        stored.copy_(new if keep is None else torch.where(keep, new, stored))
        if layer.bias is not None:
            layer.bias.copy_(_pull(layer.bias, a, radius))
        return
    if isinstance(layer, LowRankConv2d):
        if layer.combining != "full" or layer.normalize == "norm":
            raise TypeError(
                "dynamic sharing of a LowRankConv2d needs combining='full' and normalize 'softmax' or 'none' "
                f"(got {layer.combining!r}, {layer.normalize!r}): other combining weights cannot hold the average"
            )
        weights = _pull(layer.combining_weights(), a, radius)
        layer.combining_logits.copy_(weights.log() if layer.normalize == "softmax" else weights)
        if layer.spatial_bias:
            layer.bias_spatial.copy_(_pull(layer.bias_spatial, a, radius))
        return
    raise TypeError(f"dynamic sharing applies to FreeConv2d and LowRankConv2d layers, not {type(layer).__name__}")


@torch.no_grad()
def dynamic_share_(module: nn.Module, strength: float, radius: int | None = None) -> int:
    """One sharing step on every ``FreeConv2d`` / ``LowRankConv2d`` of ``module``; returns how many.

    A radius at least as large as a layer's map makes the group of that layer global.
    """
    count = 0
    for sub in module.modules():
        if isinstance(sub, (FreeConv2d, LowRankConv2d)):
            share_layer_(sub, strength, radius)
            count += 1
    return count
