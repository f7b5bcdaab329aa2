"""A small generated dataset whose label depends on a shape AND on where it is.

Ten classes: one of five shapes (:data:`SHAPES`: bar, square, cross, ring, dot) drawn in
the top or the bottom half of a dark square image; ``label = 5 * half + shape`` (0..4
top, 5..9 bottom). Because the same shape means different classes in the two halves, a
network must keep position information to solve it: the property that separates weight
sharing from free convolution, in a dataset that a small network learns in seconds.

Jitter keeps it from being trivial: the shape's side varies (about 25-36% of the image
side), it sits anywhere inside its half, its brightness is drawn from 160..255, and
Gaussian pixel noise (std ``noise_std``, default 24) is added before clipping to 0..255.
Classes are balanced (sizes differ by at most one). Everything comes from one
``numpy.random.Generator(PCG64(seed))``, so a seed gives the same bytes on every machine.

There is no official test set; the first 80% of the images (``size - size // 5``) are
declared the "official train" part so ``split=standard`` works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from weightshare.data.dataset import ArrayDataset
from weightshare.errors import ConfigError

__all__ = ["NUM_CLASSES", "SHAPES", "SyntheticArrays", "generate_synthetic", "load_synthetic", "shape_mask"]

SHAPES = ("bar", "square", "cross", "ring", "dot")
HALVES = ("top", "bottom")
NUM_CLASSES = len(SHAPES) * len(HALVES)
MIN_IMAGE_SIZE = 12


def shape_mask(shape: str, side: int) -> np.ndarray:
    """Boolean (side, side) mask of one shape; stroke width ``max(1, round(side / 4))``.

    bar: a vertical stroke; cross: vertical and horizontal strokes; square: filled; ring:
    the square's outline; dot: a filled disc of radius about ``side / 4`` in the middle.
    """
    t = max(1, round(side / 4))
    y, x = np.mgrid[0:side, 0:side]
    lo = (side - t) // 2
    vertical = (x >= lo) & (x < lo + t)
    horizontal = (y >= lo) & (y < lo + t)
    if shape == "bar":
        return vertical
    if shape == "cross":
        return vertical | horizontal
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    if shape == "ring":
        return (y < t) | (y >= side - t) | (x < t) | (x >= side - t)
    if shape == "dot":
        c = (side - 1) / 2
        return (y - c) ** 2 + (x - c) ** 2 <= (side / 4) ** 2 + 0.5
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def side_range(image_size: int) -> tuple[int, int]:
    """Smallest and largest shape side for an image size (the largest fits in a half)."""
    half = image_size // 2
    lo = max(4, round(0.25 * image_size))
    hi = max(lo, min(half, round(0.36 * image_size)))
    return lo, hi


@dataclass
class SyntheticArrays:
    """The generated images and labels plus how each was drawn (for tests and plots)."""

    images: np.ndarray  # uint8 (N, 1, S, S)
    labels: np.ndarray  # int64 (N,), 5 * half + shape
    shapes: np.ndarray  # index into SHAPES
    halves: np.ndarray  # 0 top, 1 bottom
    rows: np.ndarray  # top-left corner of the shape's box
    cols: np.ndarray
    sides: np.ndarray
    intensities: np.ndarray


def generate_synthetic(size: int, image_size: int = 28, seed: int = 0, noise_std: float = 24.0) -> SyntheticArrays:
    """Draw ``size`` images of ``image_size`` x ``image_size`` pixels, deterministically."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError("data.options.size", size, "an integer >= 1")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ConfigError("data.options.image_size", image_size, f"an integer >= {MIN_IMAGE_SIZE}")
    if noise_std < 0:
        raise ConfigError("noise_std", noise_std, "a standard deviation >= 0")
    rng = np.random.Generator(np.random.PCG64(seed))
    s = image_size
    half = s // 2
    labels = rng.permutation(np.arange(size) % NUM_CLASSES).astype(np.int64)
    shapes, halves = labels % len(SHAPES), labels // len(SHAPES)
    lo, hi = side_range(s)
    sides = rng.integers(lo, hi + 1, size=size)
    # top half: rows [0, half - side]; bottom half: rows [s - half, s - side] (the middle row
    # of an odd-sized image belongs to neither, so both halves offer the same positions)
    offsets = rng.integers(0, half - sides + 1)
    rows = np.where(halves == 0, offsets, s - half + offsets)
    cols = rng.integers(0, s - sides + 1)
    intensities = rng.integers(160, 256, size=size)
    canvas = np.zeros((size, s, s), dtype=np.float32)
    masks = {(k, side): shape_mask(name, side) for k, name in enumerate(SHAPES) for side in range(lo, hi + 1)}
    for i in range(size):
        r, c, side = rows[i], cols[i], sides[i]
        canvas[i, r : r + side, c : c + side][masks[(int(shapes[i]), int(side))]] = intensities[i]
    if noise_std > 0:
        canvas += rng.normal(0.0, noise_std, size=canvas.shape).astype(np.float32)
    images = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)[:, None]
    return SyntheticArrays(images, labels, shapes, halves, rows, cols, sides, intensities)


def load_synthetic(
    root: str | Path | None = None,
    download: bool = False,
    verify_checksums: bool = True,
    size: int = 2048,
    image_size: int = 28,
    seed: int = 0,
    noise_std: float = 24.0,
) -> ArrayDataset:
    """The generated set as an ``ArrayDataset`` (1 channel, 10 classes).

    ``root``, ``download`` and ``verify_checksums`` are accepted for a uniform reader
    signature and ignored: nothing is read from disk.
    """
    arrays = generate_synthetic(size, image_size, seed, noise_std)
    return ArrayDataset(
        name="synthetic",
        images=torch.from_numpy(arrays.images),
        labels=torch.from_numpy(arrays.labels),
        n_train=size - size // 5,
        num_classes=NUM_CLASSES,
    )
