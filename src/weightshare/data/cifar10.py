"""CIFAR-10 from its python pickle batches -> ``ArrayDataset``, unpickled safely.

The distribution (``cifar-10-python.tar.gz``) holds ``cifar-10-batches-py/`` with
``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta``: Python 2
pickles of dicts whose ``data`` is a uint8 array (N, 3072) (1024 red, 1024 green, 1024 blue
values, row-major 32x32 each) and whose ``labels`` is a list of ints.

Why not ``pickle.load`` (as torchvision does): unpickling can call any importable
function, so a crafted file placed in ``data.root`` would run code. :class:`SafeUnpickler`
resolves only the three numpy names the real files reference (``_reconstruct``,
``ndarray``, ``dtype``; the ``numpy.core`` names of the original files and the
``numpy._core`` names of numpy 2), so anything else is refused with a DataError. Each file's
md5 is also checked against torchvision's published list before it is unpickled.

Where the files are looked for, in order: ``root/cifar-10-batches-py/``, then ``root``.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightshare.data import download as dl
from weightshare.data.dataset import ArrayDataset
from weightshare.errors import DataError

__all__ = [
    "CIFAR10_ARCHIVE_MD5",
    "CIFAR10_ARCHIVE_URLS",
    "CIFAR10_FILES",
    "CIFAR10_MD5",
    "ForbiddenGlobalError",
    "SafeUnpickler",
    "cifar10_dirs",
    "load_cifar10",
    "safe_unpickle",
]

BASE_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
CIFAR10_FILES = (*TRAIN_BATCHES, TEST_BATCH, META)

#: Published md5 sums of the individual files (torchvision's ``CIFAR10.train_list``,
#: ``test_list`` and ``meta``).
CIFAR10_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR10_ARCHIVE_URLS: list[str] = ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"

_PIXELS = 3 * 32 * 32
_HINT = (
    "Set data.root=/path/containing/cifar-10-batches-py (the folder that holds "
    "cifar-10-batches-py/, or that folder itself)"
)


def _numpy_reconstruct() -> Any:
    """``numpy``'s array-unpickling helper, found where this numpy version keeps it."""
    core = getattr(np, "_core", None)
    if core is None:  # pragma: no cover - numpy < 2
        from numpy.core import multiarray
    else:
        multiarray = core.multiarray
    return multiarray._reconstruct


class ForbiddenGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global outside :attr:`SafeUnpickler.ALLOWED`."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a CIFAR-10 batch contains.

    Plain containers, strings, bytes and numbers need no globals; the numpy arrays need
    exactly these three. Any other global (``os.system``, ``builtins.eval``, ...) raises
    ``pickle.UnpicklingError`` before it can be called.
    """

    ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise ForbiddenGlobalError(f"global {module}.{name} is not allowed") from None


def safe_unpickle(data: bytes, path: Path | str) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler` (``encoding='bytes'``, as the files are
    Python 2 pickles); any failure is a DataError naming ``path``."""
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except ForbiddenGlobalError as exc:
        raise DataError(
            f"{path}: refused to unpickle: {exc} (a CIFAR-10 batch holds only numpy arrays, "
            f"lists, dicts, bytes and numbers; this file is crafted or not a CIFAR-10 batch)"
        ) from exc
    except Exception as exc:  # EOFError, ValueError, TypeError, ...: the bytes are not a valid pickle
        raise DataError(f"{path}: malformed pickle: {type(exc).__name__}: {exc}") from exc


def _get(d: Mapping[Any, Any], key: str) -> Any:
    """``d[key]`` for bytes keys (the original Python 2 files) or str keys (re-pickled)."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _read_batch(path: Path, md5: str | None) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images (N, 3, 32, 32) uint8, labels (N,) int64, validated."""
    data = _read_bytes(path, md5)
    entry = safe_unpickle(data, path)
    if not isinstance(entry, dict):
        raise DataError(f"{path}: malformed CIFAR-10 batch: expected a dict, got {type(entry).__name__}")
    images, labels = _get(entry, "data"), _get(entry, "labels")
    if images is None or labels is None:
        raise DataError(
            f"{path}: malformed CIFAR-10 batch: missing key 'data' or 'labels' (has {sorted(map(repr, entry))})"
        )
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != _PIXELS:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"{path}: malformed CIFAR-10 batch: 'data' must be uint8 of shape (N, {_PIXELS}), got {got}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: malformed CIFAR-10 batch: 'labels' are not integers: {exc}") from exc
    if labels.shape != (images.shape[0],):
        raise DataError(
            f"{path}: malformed CIFAR-10 batch: {images.shape[0]} images but 'labels' has shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(
            f"{path}: malformed CIFAR-10 batch: labels span [{labels.min()}, {labels.max()}], expected 0..9"
        )
    return images.reshape(-1, 3, 32, 32), labels


def _read_meta(path: Path, md5: str | None) -> list[str]:
    """``batches.meta`` -> the 10 class names (checked, so a wrong file is caught early)."""
    meta = safe_unpickle(_read_bytes(path, md5), path)
    names = _get(meta, "label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{path}: malformed CIFAR-10 meta file: expected 'label_names' with 10 class names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_bytes(path: Path, md5: str | None) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if md5 is not None:
        dl.check_md5(path, dl.md5_bytes(data), md5)
    return data


def cifar10_dirs(root: str | Path) -> list[Path]:
    """The folders searched for the batch files, in order."""
    root = Path(root).expanduser()
    return dl.unique_dirs([root / BASE_FOLDER, root])


def _download(root: Path, verify_checksums: bool) -> None:
    """Fetch and extract the archive into ``root`` (torchvision when it imports).

    The own downloader keeps ``root/cifar-10-python.tar.gz`` after extracting it, as
    torchvision does, so a later extraction needs no second download.
    """
    if dl.torchvision_download("CIFAR10", "CIFAR-10", root):
        return
    archive = root / ARCHIVE_NAME
    md5 = CIFAR10_ARCHIVE_MD5 if verify_checksums else None
    if not archive.is_file():
        dl.fetch(CIFAR10_ARCHIVE_URLS, archive, md5=md5)
    elif md5 is not None:
        dl.check_md5(archive, dl.md5_file(archive), md5)
    dl.safe_extract_tar(archive, root)


def load_cifar10(
    root: str | Path,
    download: bool = False,
    verify_checksums: bool = True,
    checksums: Mapping[str, str] | None = None,
) -> ArrayDataset:
    """Read CIFAR-10: images uint8 (60000, 3, 32, 32), train (50000) then test (10000).

    ``checksums`` overrides the expected md5 per file name (e.g. for test files). With
    ``download=True`` a missing set is downloaded into ``root`` first. Every problem raises
    DataError naming the file (or, when files are missing, every folder searched).
    """
    root = Path(root).expanduser()
    expected = {**CIFAR10_MD5, **(checksums or {})} if verify_checksums else None
    found = dl.locate_or_download(
        "CIFAR-10",
        cifar10_dirs(root),
        CIFAR10_FILES,
        download=download,
        fetch_all=lambda: _download(root, verify_checksums),
        download_dir=root / BASE_FOLDER,
        hint=_HINT,
    )

    def md5(name: str) -> str | None:
        return None if expected is None else expected[name]

    _read_meta(found[META], md5(META))
    batches = [_read_batch(found[name], md5(name)) for name in (*TRAIN_BATCHES, TEST_BATCH)]
    n_train = sum(len(lab) for _, lab in batches[:-1])
    images = torch.from_numpy(np.concatenate([img for img, _ in batches]))
    labels = torch.from_numpy(np.concatenate([lab for _, lab in batches]))
    return ArrayDataset(name="cifar10", images=images, labels=labels, n_train=n_train, num_classes=10)
