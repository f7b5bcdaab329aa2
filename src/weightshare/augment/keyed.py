"""Training augmentation and evaluation perturbations drawn from per-sample keys.

The same semantics as :class:`~weightshare.augment.TrainAugmenter`'s generator path (one
affine resampling for translate + rotate, crop, flip, then Gaussian and edge noise), but
every random number comes from :class:`~weightshare.augment.keyed_rng.SampleKeys`, so a
sample's augmentation depends only on its key, never on its batch. Levels may be floats
(a single run) or per-sample tensors (N,) (a pack of members with different levels): the
packed trainer and a single run call this one function, which is what makes a pack's
members see exactly their single runs' images.
"""

from __future__ import annotations

import torch

from ._util import check_batch, compute_dtype
from .geometry import affine_batch, crop_at
from .keyed_rng import STREAMS, SampleKeys
from .noise import faithful_edge_mask, frame_mask

Level = float | torch.Tensor

__all__ = ["keyed_affine_draws", "keyed_train_augment"]


def _per_sample(level: Level, n: int, device: torch.device) -> torch.Tensor | None:
    """(n,) float64 levels, or None when the level is the float 0 (the draw is skipped)."""
    if isinstance(level, torch.Tensor):
        if level.shape != (n,):
            raise ValueError(f"a per-sample level must have shape ({n},), got {tuple(level.shape)}")
        return level.to(device=device, dtype=torch.float64)
    if float(level) == 0.0:
        return None
    return torch.full((n,), float(level), device=device, dtype=torch.float64)


def keyed_affine_draws(
    keys: SampleKeys, height: int, width: int, translate: Level, rotate_degrees: Level
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Shifts (N, 2) as (dx, dy) uniform in +-f*W, +-f*H and angles (N,) in +-degrees (None if off)."""
    n, dev = len(keys), keys.device
    t = _per_sample(translate, n, dev)
    r = _per_sample(rotate_degrees, n, dev)
    shifts = angles = None
    if t is not None:
        u = keys.uniform(STREAMS["shift"], 2, torch.float64) * 2.0 - 1.0
        shifts = (u * torch.stack((t * width, t * height), dim=1)).float()
    if r is not None:
        u = keys.uniform(STREAMS["angle"], 1, torch.float64)[:, 0] * 2.0 - 1.0
        angles = (u * r).float()
    return shifts, angles


def _active(*levels: torch.Tensor | None) -> torch.Tensor | None:
    """Per-sample bool: some level is non-zero (None: every level is off)."""
    on = [lv != 0 for lv in levels if lv is not None]
    if not on:
        return None
    out = on[0]
    for o in on[1:]:
        out = out | o
    return out


def _where(active: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` where the sample's augmentation is on, ``old`` itself elsewhere (exact identity).

    Always a ``torch.where`` (no ``active.all()`` shortcut): a host sync per batch on a GPU
    would cost more than the select.
    """
    return torch.where(active.view(-1, 1, 1, 1), new, old)


def keyed_train_augment(
    x: torch.Tensor,
    keys: SampleKeys,
    *,
    translate: Level = 0.0,
    rotate: Level = 0.0,
    noise: Level = 0.0,
    edge_noise: Level = 0.0,
    edge_width: int = 5,
    faithful_edge_noise: bool = False,
    crop_padding: int = 0,
    hflip: bool = False,
    member_batch: int | None = None,
) -> torch.Tensor:
    """Augment a float batch (N, C, H, W) in [0, 1] with draws from ``keys`` (see the module doc).

    ``rotate`` is the level (fraction of 360 degrees), as in ``aug.rotate``. A sample whose
    levels are all 0 comes back bit-identical. ``member_batch``: the size of one member's
    batch when ``x`` holds several members' batches back to back (only the faithful edge
    mask, which depends on the position in the batch, needs it).
    """
    check_batch(x)
    n, _, H, W = x.shape
    if len(keys) != n:
        raise ValueError(f"{len(keys)} sample keys for a batch of {n}")
    dev = x.device
    t = _per_sample(translate, n, dev)
    r = _per_sample(rotate, n, dev)
    if t is not None or r is not None:
        shifts, angles = keyed_affine_draws(keys, H, W, translate, rotate * 360.0)
        on = _active(t, r)
        assert on is not None
        x = _where(on, affine_batch(x, angles, shifts), x)
    if crop_padding > 0:
        u = keys.uniform(STREAMS["crop"], 2, torch.float64)
        offsets = torch.floor(u * (2 * crop_padding + 1)).long().clamp_(max=2 * crop_padding)
        x = crop_at(x, crop_padding, offsets)
    if hflip:
        flip = keys.uniform(STREAMS["flip"], 1, torch.float64)[:, 0] < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    cdt = compute_dtype(x)
    s = _per_sample(noise, n, dev)
    if s is not None:
        z = keys.normal(STREAMS["noise"], x[0].numel(), cdt).view(x.shape)
        x = (x.to(cdt) + z * s.to(cdt).view(-1, 1, 1, 1)).to(x.dtype)
    e = _per_sample(edge_noise, n, dev)
    if e is not None:
        if faithful_edge_noise:
            b = member_batch or n
            mask = faithful_edge_mask(b, H, W, edge_width, dev).repeat(n // b, 1, 1, 1)
        else:
            mask = frame_mask(H, W, edge_width, dev).view(1, 1, H, W)
        z = keys.normal(STREAMS["edge_noise"], x[0].numel(), cdt).view(x.shape)
        # where the mask is 0 this adds exactly 0: the interior stays bit-identical
        x = (x.to(cdt) + z * (mask.to(cdt) * e.to(cdt).view(-1, 1, 1, 1))).to(x.dtype)
    return x
