"""Geometric augmentations of a whole batch: translate, rotate, crop, horizontal flip.

Translation and rotation share one sampler, :func:`affine_batch`, so a batch augmented with
both is resampled once (as Keras' ``ImageDataGenerator`` does with its combined transform
matrix). Conventions, fixed here and relied on by the tests:

- Pixel centres sit at integer coordinates: pixel ``(row i, col j)`` is the point
  ``(x=j, y=i)``; the image centre is ``((W-1)/2, (H-1)/2)``. This is the convention of
  ``scipy.ndimage.affine_transform`` that Keras' ``apply_affine_transform`` calls
  (``order=1``, ``mode='nearest'``).
- ``shifts_px[b] = (dx, dy)`` moves the content right by ``dx`` and down by ``dy`` pixels, so an
  integer shift equals ``torch.roll(x, (dy, dx), dims=(-2, -1))`` with the wrapped rows and
  columns replaced by the nearest edge.
- A positive angle turns the content counter-clockwise as displayed (rows pointing down),
  so 90 degrees equals ``torch.rot90(x, 1, dims=(-2, -1))`` on a square image.
- Sampling is bilinear; a point outside the image takes the value of the nearest edge point
  (coordinates clamped to ``[0, W-1] x [0, H-1]``: ``fill_mode='nearest'``).

Keras draws ``tx`` with the opposite sign convention (input = M @ output); the draws are
symmetric, so the distribution of augmented images is the same.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._util import check_batch, check_generator, compute_dtype

# A sine or cosine this close to -1, 0 or 1 is snapped to it, so multiples of 90 degrees
# map pixel centres onto pixel centres exactly (float32 gives cos(pi/2) = -4.4e-8). The
# largest coordinate error this can add is 1e-6 * image size, far below a pixel.
_TRIG_SNAP = 1e-6


def _snap_unit(v: torch.Tensor) -> torch.Tensor:
    r = torch.round(v)
    return torch.where((v - r).abs() < _TRIG_SNAP, r, v)


def _pow2_plus_one(n: int) -> int:
    """Smallest ``2**k + 1 >= n`` (k >= 1): a side whose half-extent ``(side-1)/2`` is a power of 2."""
    k = max(1, math.ceil(math.log2(max(n - 1, 1))))
    return 2**k + 1


def affine_batch(
    x: torch.Tensor,
    angles_deg: torch.Tensor | None,
    shifts_px: torch.Tensor | None,
) -> torch.Tensor:
    """Rotate each image about its centre, then shift it, with one bilinear resampling.

    ``angles_deg``: (B,) degrees, counter-clockwise as displayed, or None for no rotation.
    ``shifts_px``: (B, 2) as ``(dx, dy)`` in pixels (right, down), or None for no shift.
    Output pixel ``p`` takes the input at ``c + R(-angle) (p - shift - c)``, bilinear, with
    nearest-edge fill. The grid is float32 (float64 for float64 input) and the result has
    ``x``'s dtype. Deterministic: the random wrappers draw and call this.

    How (and why not a hand-written gather): ``F.grid_sample`` is one fused kernel, ~20x
    faster on CPU than the dozen tensor ops of a manual bilinear gather, but it takes
    normalised coordinates, ``q = (g + 1) * (side - 1) / 2`` with ``align_corners=True``
    (-1 is the centre of the first pixel). For side 28 that round trip is inexact
    (``(side-1)/2 = 13.5``), so an integer shift would come out a few ULPs off. The batch
    is therefore replicate-padded on the right and bottom to ``2**k + 1`` pixels (28 and 32
    -> 33), where ``(side-1)/2`` is a power of two and the grid of ``F.affine_grid`` and its
    unnormalisation are exact for integer coordinates: integer shifts and quarter turns give
    bilinear weights of exactly 0 and 1. The replicated pad equals the nearest-edge fill on
    that side, and ``padding_mode='border'`` gives it on the other; the output is cropped back.
    """
    check_batch(x)
    B, C, H, W = x.shape
    dev = x.device
    if angles_deg is None and shifts_px is None:
        return x
    if angles_deg is None:
        cos = torch.ones(B, device=dev)
        sin = torch.zeros(B, device=dev)
    else:
        if angles_deg.shape != (B,):
            raise ValueError(f"angles_deg must have shape ({B},), got {tuple(angles_deg.shape)}")
        deg = torch.remainder(angles_deg.to(device=dev, dtype=torch.float32), 360.0)
        rad = deg * (math.pi / 180.0)
        cos = _snap_unit(torch.cos(rad))
        sin = _snap_unit(torch.sin(rad))
    if shifts_px is None:
        dx = dy = torch.zeros(B, device=dev)
    else:
        if shifts_px.shape != (B, 2):
            raise ValueError(f"shifts_px must have shape ({B}, 2) as (dx, dy), got {tuple(shifts_px.shape)}")
        s = shifts_px.to(device=dev, dtype=torch.float32)
        dx, dy = s[:, 0], s[:, 1]

    Hp, Wp = _pow2_plus_one(H), _pow2_plus_one(W)
    sx, sy = (Wp - 1) / 2.0, (Hp - 1) / 2.0  # powers of two: exact scalings
    cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
    # source pixel q = c + R^{-1} (p - shift - c) = A p + t, in pixel units
    ux, uy = -dx - cx, -dy - cy
    tx = cx + cos * ux - sin * uy
    ty = cy + sin * ux + cos * uy
    # the same map in normalised coordinates g = q / s - 1 of the padded image
    rxy, ryx = sy / sx, sx / sy
    theta = torch.stack(
        (
            torch.stack((cos, -sin * rxy, cos - sin * rxy + tx / sx - 1.0), dim=1),
            torch.stack((sin * ryx, cos, sin * ryx + cos + ty / sy - 1.0), dim=1),
        ),
        dim=1,
    )
    cdt = compute_dtype(x)
    xp = F.pad(x.to(cdt), (0, Wp - W, 0, Hp - H), mode="replicate")
    grid = F.affine_grid(theta.to(cdt), [B, C, Hp, Wp], align_corners=True)
    out = F.grid_sample(xp, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, :, :H, :W].contiguous().to(x.dtype)


def sample_shifts(
    n: int,
    height: int,
    width: int,
    fraction: float,
    generator: torch.Generator | None,
    device: torch.device | str,
) -> torch.Tensor:
    """(n, 2) shifts ``(dx, dy)``: dx uniform in [-f*W, f*W], dy in [-f*H, f*H], one draw of (n, 2)."""
    u = torch.rand(n, 2, generator=generator, device=device) * 2.0 - 1.0
    scale = torch.tensor([fraction * width, fraction * height], device=device)
    return u * scale


def sample_angles(
    n: int, max_degrees: float, generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """(n,) angles uniform in [-max_degrees, max_degrees], one draw of (n,)."""
    return (torch.rand(n, generator=generator, device=device) * 2.0 - 1.0) * max_degrees


def random_affine(
    x: torch.Tensor, translate: float, rotate_degrees: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Random shift (fraction ``translate`` of the size) and rotation (+-``rotate_degrees``), one resampling.

    Draws shifts first (if ``translate > 0``), then angles (if ``rotate_degrees > 0``).
    Returns ``x`` itself when both are 0.
    """
    check_batch(x)
    check_generator(generator, x)
    if translate == 0 and rotate_degrees == 0:
        return x
    B, _, H, W = x.shape
    shifts = sample_shifts(B, H, W, translate, generator, x.device) if translate > 0 else None
    angles = sample_angles(B, rotate_degrees, generator, x.device) if rotate_degrees > 0 else None
    return affine_batch(x, angles, shifts)


def translate(x: torch.Tensor, fraction: float, generator: torch.Generator | None) -> torch.Tensor:
    """Shift every image by its own real offset, uniform in +-fraction*W and +-fraction*H.

    Bilinear with nearest-edge fill: Keras ``width_shift_range=height_shift_range=fraction``,
    ``fill_mode='nearest'``. ``fraction=0`` returns ``x``.
    """
    return random_affine(x, fraction, 0.0, generator)


def rotate(x: torch.Tensor, fraction: float, generator: torch.Generator | None) -> torch.Tensor:
    """Rotate every image about its centre by an angle uniform in +-fraction*360 degrees.

    The paper's level f maps to Keras ``rotation_range=int(f*360)``; the real-valued
    ``f*360`` is used here (the protocol's text), which differs by under one degree.
    """
    return random_affine(x, 0.0, fraction * 360.0, generator)


def rotate_degrees(x: torch.Tensor, max_degrees: float, generator: torch.Generator | None) -> torch.Tensor:
    """Rotate every image by an angle uniform in +-max_degrees (the evaluation variant uses 45)."""
    return random_affine(x, 0.0, max_degrees, generator)


def crop_at(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Crop each zero-padded image back to (H, W) at its offset.

    ``offsets``: (B, 2) integers ``(ox, oy)`` in [0, 2*padding]: output pixel (i, j) is the
    padded image's pixel (i + oy, j + ox), so offset (padding, padding) is the identity.
    One gather over the batch (no per-sample slicing loop).
    """
    check_batch(x)
    B, C, H, W = x.shape
    if padding == 0:
        return x
    padded = F.pad(x, (padding, padding, padding, padding))
    Wp = W + 2 * padding
    off = offsets.to(device=x.device, dtype=torch.long)
    rows = off[:, 1].view(B, 1, 1) + torch.arange(H, device=x.device).view(1, H, 1)
    cols = off[:, 0].view(B, 1, 1) + torch.arange(W, device=x.device).view(1, 1, W)
    idx = (rows * Wp + cols).view(B, 1, H * W).expand(B, C, H * W)
    return padded.reshape(B, C, -1).gather(2, idx).view(B, C, H, W)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """Zero-pad by ``padding`` on each side and crop (H, W) at a uniform random offset per image.

    The CIFAR recipe of ResNet/ShaResNet (not part of the paper's protocol). Draws
    ``torch.randint(0, 2*padding + 1, (B, 2))`` as ``(ox, oy)``; see :func:`crop_at`.
    """
    check_batch(x)
    check_generator(generator, x)
    if padding == 0:
        return x
    offsets = torch.randint(0, 2 * padding + 1, (x.shape[0], 2), generator=generator, device=x.device)
    return crop_at(x, padding, offsets)


def random_hflip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2 (draws ``torch.rand(B) < 0.5``)."""
    check_batch(x)
    check_generator(generator, x)
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
