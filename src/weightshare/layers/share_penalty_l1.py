"""All-pairs weight-sharing regulariser (Shakerinava, Sohrabi, Ravanbakhsh, Lacoste-Julien, AISTATS 2024).

"Weight-Sharing Regularization" penalises, for every kernel entry, the absolute differences
between *all* pairs of positions (not only neighbours, not squared):

    R(W) = 1 / (P - 1) * sum_{p < q} sum_e |W_p[e] - W_q[e]|,

with ``P`` output positions of the layer. Its proximal/gradient flow pulls positions towards
each other's values and, being an L1 penalty, lets groups of positions become *exactly*
equal (sharing emerges in clusters), unlike the L2 neighbour penalty.

Computed in ``O(P log P)`` per entry instead of ``O(P^2)`` pairs: with the values of one
entry sorted ascending, ``x_(0) <= ... <= x_(P-1)``, each ``x_(k)`` is the larger one of ``k``
pairs and the smaller one of ``P - 1 - k``, so

    sum_{p < q} |x_p - x_q| = sum_k (2k - P + 1) x_(k).

``torch.sort`` is differentiable (its backward scatters the gradient to the original
positions), so autograd gives the subgradient ``(#smaller - #larger) / (P - 1)`` per value,
with ties split by the sort order (a valid subgradient of ``|.|`` at 0). No library offers
this penalty, hence the hand-written code.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["all_pairs_l1"]


def all_pairs_l1(kernel: Tensor) -> Tensor:
    """``R(W)`` above for ``kernel`` ``(out_h, out_w, ...)`` (first two dims are positions).

    Returns a differentiable scalar; zero for a single position or equal positions.
    """
    if kernel.dim() < 2:
        raise ValueError(f"kernel must have shape (out_h, out_w, ...), got {tuple(kernel.shape)}")
    flat = kernel.reshape(kernel.shape[0] * kernel.shape[1], -1)  # (P, D)
    positions = flat.shape[0]
    if positions < 2:
        return flat.new_zeros(())
    ordered = flat.sort(dim=0).values
    k = 2 * torch.arange(positions, dtype=ordered.dtype, device=ordered.device) - (positions - 1)  # 2k - P + 1
    return (k[:, None] * ordered).sum() / (positions - 1)
