"""scikit-learn's bundled handwritten digits, resized to MNIST's geometry -> ``ArrayDataset``.

Real images that need no download: the quick start and the tests that need real data
offline use them. ``sklearn.datasets.load_digits`` ships 1797 images of 8x8 pixels with
values 0..16 inside the scikit-learn package. They are upsampled to ``image_size`` x
``image_size`` (default 28, like MNIST, so the paper's MNIST networks apply unchanged) with
bilinear interpolation (``torch.nn.functional.interpolate``, ``align_corners=False``; no
antialiasing, which only matters when shrinking), then mapped to 0..255 as
``round(value * 255 / 16)`` (round half to even), uint8.

The set has no official train/test division. The "official train" part is fixed as the
first :data:`DIGITS_N_TRAIN` = 1438 images (80%) and the "test" part as the last 359: this
is the complement of the last fold of the 5-fold split, so ``split=standard`` validates
on exactly the images of ``split=kfold fold=4``, and both stay stable across versions.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from weightshare.data.dataset import ArrayDataset
from weightshare.errors import ConfigError

__all__ = ["DIGITS_N_TRAIN", "load_digits", "read_sklearn_digits", "resize_digits"]

DIGITS_N_TRAIN = 1438
DIGITS_MAX = 16


def read_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 images (N, 8, 8) float64 0..16 and labels (N,) of ``load_digits``.

    Why not always call ``sklearn.datasets.load_digits``: importing scikit-learn takes
    about 2 s on the project's machines, at every training start. The same data is read
    directly from the file ``load_digits`` itself reads (``sklearn/datasets/data/
    digits.csv.gz``: 64 pixel values then the label per row), located without importing
    the package; if that file is not where expected (another scikit-learn layout),
    ``load_digits`` is called. A test checks both give identical arrays.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            if table.shape == (1797, 65):
                return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def resize_digits(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """(N, 8, 8) values 0..16 -> (N, 1, S, S) uint8 0..255, bilinear, as documented above.

    Interpolates in float64 so the rounding to uint8 is exact and platform-independent.
    """
    x = images.to(torch.float64).reshape(-1, 1, 8, 8)
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return torch.round(x * (255.0 / DIGITS_MAX)).clamp_(0, 255).to(torch.uint8)


def load_digits(
    root: str | Path | None = None,
    download: bool = False,
    verify_checksums: bool = True,
    image_size: int = 28,
) -> ArrayDataset:
    """The 1797 digits as uint8 (1797, 1, image_size, image_size); labels 0..9.

    ``root``, ``download`` and ``verify_checksums`` are accepted for a uniform reader
    signature and ignored: the data is part of scikit-learn.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ConfigError("data.options.image_size", image_size, "an integer >= 8 (the images are 8x8)")
    pixels, target = read_sklearn_digits()
    images = resize_digits(torch.from_numpy(pixels), image_size)
    labels = torch.from_numpy(target).to(torch.int64)
    return ArrayDataset(name="digits", images=images, labels=labels, n_train=DIGITS_N_TRAIN, num_classes=10)
