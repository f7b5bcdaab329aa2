"""Dataset name -> reader, and :func:`load_dataset`, the one entry point of the readers.

Every reader takes ``(root, download, verify_checksums, **options)`` and returns an
``ArrayDataset``; options a reader does not know are reported as a ConfigError naming
them, instead of a TypeError from deep inside the call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from weightshare.data.cifar10 import load_cifar10
from weightshare.data.dataset import ArrayDataset
from weightshare.data.digits import load_digits
from weightshare.data.mnist import load_mnist
from weightshare.data.synthetic import load_synthetic
from weightshare.errors import ConfigError

__all__ = ["DATASETS", "check_reader_options", "load_dataset", "reader_options"]

Reader = Callable[..., ArrayDataset]

DATASETS: dict[str, Reader] = {
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "digits": load_digits,
    "synthetic": load_synthetic,
}

_COMMON = ("root", "download", "verify_checksums")


def reader_options(name: str) -> list[str]:
    """The extra options a dataset's reader accepts (e.g. ``size`` for synthetic)."""
    params = inspect.signature(DATASETS[name]).parameters
    return [p for p in params if p not in _COMMON]


def check_reader_options(name: str, options: Mapping[str, Any]) -> None:
    """A ConfigError for a dataset name that is not registered or an option its reader does not take."""
    if name not in DATASETS:
        raise ConfigError("data.name", name, f"one of {list(DATASETS)}")
    allowed = reader_options(name)
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError(f"data.options.{key}", value, f"an option of data={name}: one of {allowed}")


def load_dataset(
    name: str,
    root: str | Path | None,
    download: bool = False,
    verify_checksums: bool = True,
    **opts: Any,
) -> ArrayDataset:
    """Read dataset ``name`` (one of :data:`DATASETS`) from ``root``.

    Options per dataset: mnist/cifar10 ``checksums`` (file name -> md5 overrides);
    digits ``image_size``; synthetic ``size``, ``image_size``, ``seed``, ``noise_std``.
    """
    check_reader_options(name, opts)
    if root is None and name in ("mnist", "cifar10"):
        raise ConfigError("data.root", root, f"a folder holding the {name} files")
    return DATASETS[name](root=root, download=download, verify_checksums=verify_checksums, **opts)
