"""Small helpers shared by the augmentation modules: input checks and the compute dtype.

Kept apart so that every augmentation checks its batch and its generator the same way and
fails with one clear line instead of a shape error deep inside a gather.
"""

from __future__ import annotations

import torch


def check_batch(x: torch.Tensor, name: str = "x") -> None:
    """Require a floating (B, C, H, W) batch: the augmentations index the last two axes as H, W."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor (pixels in [0, 1]), got {x.dtype}")


def check_generator(generator: torch.Generator | None, x: torch.Tensor) -> None:
    """Require the generator to live on the batch's device (draws happen where the batch is).

    ``None`` means torch's default generator of that device, which is allowed but makes the
    run irreproducible unless the global seed is fixed.
    """
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(
            f"generator is on {generator.device} but the batch is on {x.device}; "
            "create it with torch.Generator(device=x.device)"
        )


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half/bf16/float32 batches, float64 for float64: where sums are formed."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32
