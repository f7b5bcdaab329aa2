"""Additive Gaussian noise on the whole image or on its frame (edge noise).

Noise is drawn in float32 (float64 for float64 batches) with one ``torch.randn`` of the
batch's shape, added, and the sum cast back to the batch's dtype, so a bf16 batch gets the
same noise as a float32 one up to rounding. Nothing is clipped: the protocol adds the noise
to the [0, 1] pixels and feeds the result as is.
"""

from __future__ import annotations

import torch

from ._util import check_batch, check_generator, compute_dtype


def _add_noise(
    x: torch.Tensor, std: float, generator: torch.Generator | None, mask: torch.Tensor | None
) -> torch.Tensor:
    """``x + std * mask * N(0, 1)`` in two fused ops (randn, then add/addcmul)."""
    cdt = compute_dtype(x)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=cdt)
    xc = x.to(cdt)
    if mask is None:
        return torch.add(xc, noise, alpha=std).to(x.dtype)
    # where the mask is 0 this adds exactly 0: the interior stays bit-identical
    return torch.addcmul(xc, noise, mask.to(cdt) * std).to(x.dtype)


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """``x + std * N(0, 1)``, independent per pixel and channel, not clipped; ``std=0`` returns ``x``."""
    check_batch(x)
    check_generator(generator, x)
    if std == 0:
        return x
    return _add_noise(x, std, generator, None)


def frame_mask(height: int, width: int, frame: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool (H, W): True on the ``frame`` pixels next to every side of the image (the paper's mask)."""
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    r = (rows < frame) | (rows >= height - frame)
    c = (cols < frame) | (cols >= width - frame)
    return r.view(-1, 1) | c.view(1, -1)


def faithful_edge_mask(
    batch: int, height: int, width: int, frame: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Bool (B, 1, H, W) of the published code's edge mask, which sliced an NHWC batch as if HWC.

    ``mask[:frame] = mask[-frame:] = 1`` hit the batch axis (whole images ``0..frame-1`` and
    ``B-frame..B-1``), and ``mask[:, :frame] = mask[:, -frame:] = 1`` hit axis 1, which is H
    in NHWC (the top and bottom ``frame`` rows of every image). No column was masked.
    """
    b = torch.arange(batch, device=device)
    rows = torch.arange(height, device=device)
    whole = (b < frame) | (b >= batch - frame)
    top_bottom = (rows < frame) | (rows >= height - frame)
    mask = whole.view(batch, 1, 1, 1) | top_bottom.view(1, 1, height, 1)
    return mask.expand(batch, 1, height, width)


def edge_noise(
    x: torch.Tensor,
    std: float,
    width: int,
    generator: torch.Generator | None,
    faithful: bool = False,
) -> torch.Tensor:
    """Gaussian noise of ``std`` on the ``width``-pixel frame only; the interior is bit-identical.

    ``faithful=True`` uses :func:`faithful_edge_mask` instead (the published code's bug),
    kept only to reproduce its numbers. ``std=0`` returns ``x``.
    """
    check_batch(x)
    check_generator(generator, x)
    B, _, H, W = x.shape
    if width < 1 or 2 * width >= min(H, W):
        raise ValueError(f"edge width {width} must be >= 1 and < half the image side ({H}x{W})")
    if std == 0:
        return x
    mask = faithful_edge_mask(B, H, W, width, x.device) if faithful else frame_mask(H, W, width, x.device)
    return _add_noise(x, std, generator, mask)
