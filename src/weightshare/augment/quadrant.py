"""Quadrant swap: the paper's test of global structure (Figure 6).

The top-right and bottom-left blocks of ``H//2 x W//2`` pixels are exchanged; the top-left
and bottom-right stay. For odd sizes the blocks touch the corners and the middle row and
column stay. The map is an involution (applying it twice gives the input back).
"""

from __future__ import annotations

import torch

from ._util import check_batch


def quadrant_swap(x: torch.Tensor) -> torch.Tensor:
    """Exchange the top-right and bottom-left ``H//2 x W//2`` blocks of every image (a new tensor)."""
    check_batch(x)
    H, W = x.shape[-2:]
    h, w = H // 2, W // 2
    out = x.clone()
    out[..., :h, W - w :] = x[..., H - h :, :w]
    out[..., H - h :, :w] = x[..., :h, W - w :]
    return out
