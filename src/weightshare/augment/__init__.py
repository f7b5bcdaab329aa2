"""Batched, device-side augmentations and evaluation variants (the protocol's semantics).

The data module calls :class:`TrainAugmenter` on every training batch and
:class:`EvalVariants` on every validation batch, after the batch reached its device. Every
operation works on a whole (B, C, H, W) float batch (float32, bf16, float64), on any device,
without per-sample Python. See ``docs/benchmarks.md`` for their cost.

Modules: :mod:`.geometry` (one affine sampler for translate and rotate, crop, flip),
:mod:`.noise` (Gaussian and edge noise), :mod:`.quadrant` (quadrant swap),
:mod:`.validate` (config checks), :mod:`.pipeline` (the two classes).
"""

from .geometry import (
    affine_batch,
    crop_at,
    random_affine,
    random_crop,
    random_hflip,
    rotate,
    rotate_degrees,
    sample_angles,
    sample_shifts,
    translate,
)
from .noise import edge_noise, faithful_edge_mask, frame_mask, gaussian_noise
from .pipeline import EvalVariants, TrainAugmenter, eval_seed
from .quadrant import quadrant_swap
from .validate import EVAL_VARIANTS, validate_aug_levels, validate_eval_config

__all__ = [
    "EVAL_VARIANTS",
    "EvalVariants",
    "TrainAugmenter",
    "affine_batch",
    "crop_at",
    "edge_noise",
    "eval_seed",
    "faithful_edge_mask",
    "frame_mask",
    "gaussian_noise",
    "quadrant_swap",
    "random_affine",
    "random_crop",
    "random_hflip",
    "rotate",
    "rotate_degrees",
    "sample_angles",
    "sample_shifts",
    "translate",
    "validate_aug_levels",
    "validate_eval_config",
]
