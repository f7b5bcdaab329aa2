"""MNIST from its four standard IDX files (gzip-compressed or not) -> ``ArrayDataset``.

Why a reader of our own instead of ``torchvision.datasets.MNIST``: torchvision is optional
here, and its reader converts the files into a ``processed/`` cache and reports a corrupt
file only as "Dataset not found or corrupted". This one parses the IDX format directly
with ``numpy.frombuffer`` (70,000 images in well under a second), checks every header
against the file size, verifies the published md5 of the uncompressed content, and names
the file in every error. Nothing is cached on disk.

Where the files are looked for, in order (the first folder holding all four wins; each
file may be ``name`` or ``name.gz``, the uncompressed copy preferred):

1. ``root/MNIST/raw/`` (torchvision's layout, also where downloads go),
2. ``root`` itself (``root`` is the raw folder, or any folder holding the four files).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from weightshare.data import download as dl
from weightshare.data.dataset import ArrayDataset
from weightshare.errors import DataError

__all__ = ["MNIST_FILES", "MNIST_MD5", "MNIST_MIRRORS", "load_mnist", "mnist_dirs", "parse_idx", "read_idx"]

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
MNIST_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

#: Published md5 sums of the UNCOMPRESSED files (gzip output differs between compressors,
#: the content does not), see ``../shared/data/README.md``.
MNIST_MD5: dict[str, str] = {
    TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",
    TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",
    TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",
    TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",
}

#: Mirrors tried in order by the own downloader (``<mirror><name>.gz``).
MNIST_MIRRORS: list[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]

#: IDX type code -> big-endian numpy dtype (the format's full table).
IDX_DTYPES: dict[int, str] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_GZIP_MAGIC = b"\x1f\x8b"
_HINT = (
    "Set data.root=/path/containing/MNIST/raw (the folder that holds MNIST/raw/, or the folder "
    "holding the four files, e.g. data.root=../shared/data)"
)


def mnist_dirs(root: str | Path) -> list[Path]:
    """The folders searched for the four files, in order."""
    root = Path(root).expanduser()
    return dl.unique_dirs([root / "MNIST" / "raw", root])


def read_idx(path: Path) -> tuple[np.ndarray, bytes]:
    """Read an IDX file (gzip-compressed or not): ``(array, uncompressed bytes)``.

    Compression is detected from the content (gzip magic ``1f 8b``; an IDX file starts
    with two zero bytes), not the file name.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except EOFError as exc:
            raise DataError(f"{path}: truncated gzip file (the compressed stream ends early): {exc}") from exc
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip file: {exc}") from exc
    return parse_idx(raw, path), raw


def parse_idx(raw: bytes, path: Path | str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes: 2 zero bytes, a type code, the number of dims, big-endian uint32 dims.

    The size the header implies must equal the data size exactly; a short file is reported
    as truncated with the expected and the actual byte counts. The array is returned in
    native byte order (a view of ``raw`` for uint8 data, no copy).
    """
    if len(raw) < 4:
        raise DataError(f"{path}: not an IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file: magic number 0x{raw[:4].hex()} does not start with two zero bytes")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x}; expected one of {sorted(IDX_DTYPES)}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{path}: truncated IDX file: expected at least {header} header bytes for {ndim} dims, got {len(raw)} bytes"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[code])
    count = math.prod(dims)
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        state = "truncated IDX file" if len(raw) < expected else "IDX file has trailing bytes"
        raise DataError(
            f"{path}: {state}: the header declares dims {dims} of {dtype.name}, i.e. {expected} bytes, "
            f"but the data has {len(raw)} bytes"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))


def _read_checked(path: Path, name: str, ndim: int, expected_md5: str | None) -> np.ndarray:
    """Read one MNIST file: unsigned bytes, ``ndim`` dims, 28x28 images, md5 if given."""
    arr, raw = read_idx(path)
    if arr.dtype != np.uint8:
        raise DataError(f"{path}: expected unsigned bytes (IDX type 0x08) for {name}, file holds {arr.dtype}")
    if arr.ndim != ndim:
        want = "(N, 28, 28)" if ndim == 3 else "(N,)"
        raise DataError(f"{path}: expected IDX dims {want} for {name}, file has dims {arr.shape}")
    if ndim == 3 and arr.shape[1:] != (28, 28):
        raise DataError(f"{path}: expected 28x28 MNIST images, file holds images of {arr.shape[1]}x{arr.shape[2]}")
    if expected_md5 is not None:
        dl.check_md5(path, dl.md5_bytes(raw), expected_md5, what="md5 of the uncompressed content")
    return arr


def _download(root: Path, expected: Mapping[str, str] | None) -> None:
    """Fetch the missing files into ``root/MNIST/raw`` (torchvision when it imports)."""
    if dl.torchvision_download("MNIST", "MNIST", root):
        return
    raw_dir = root / "MNIST" / "raw"
    for name in MNIST_FILES:
        if (raw_dir / name).is_file() or (raw_dir / f"{name}.gz").is_file():
            continue
        md5 = None if expected is None else expected[name]

        def check(tmp: Path, name: str = name, md5: str | None = md5) -> None:
            _, raw = read_idx(tmp)
            if md5 is not None:
                dl.check_md5(tmp, dl.md5_bytes(raw), md5, what=f"md5 of the uncompressed {name}")

        dl.fetch([f"{m}{name}.gz" for m in MNIST_MIRRORS], raw_dir / f"{name}.gz", check=check)


def load_mnist(
    root: str | Path,
    download: bool = False,
    verify_checksums: bool = True,
    checksums: Mapping[str, str] | None = None,
) -> ArrayDataset:
    """Read MNIST: images uint8 (70000, 1, 28, 28), train (60000) then test (10000).

    ``checksums`` overrides expected md5 sums per file name (without ``.gz``), e.g. for
    test files; the published sums apply to the others. With ``download=True`` missing
    files are fetched into ``root/MNIST/raw`` first. Every problem raises DataError naming
    the file (or, when files are missing, every folder searched).
    """
    root = Path(root).expanduser()
    expected = {**MNIST_MD5, **(checksums or {})} if verify_checksums else None
    found = dl.locate_or_download(
        "MNIST",
        mnist_dirs(root),
        MNIST_FILES,
        suffixes=("", ".gz"),
        download=download,
        fetch_all=lambda: _download(root, expected),
        download_dir=root / "MNIST" / "raw",
        hint=_HINT,
    )

    def md5(name: str) -> str | None:
        return None if expected is None else expected[name]

    parts = []
    for img_name, lab_name in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        images = _read_checked(found[img_name], img_name, 3, md5(img_name))
        labels = _read_checked(found[lab_name], lab_name, 1, md5(lab_name))
        if len(images) != len(labels):
            raise DataError(f"{found[lab_name]}: {len(labels)} labels but {found[img_name]} holds {len(images)} images")
        if len(labels) and int(labels.max()) > 9:
            raise DataError(f"{found[lab_name]}: label {int(labels.max())} is not a digit 0..9")
        parts.append((images, labels))
    (tr_x, tr_y), (te_x, te_y) = parts
    images = torch.from_numpy(np.concatenate([tr_x, te_x])[:, None])
    labels = torch.from_numpy(np.concatenate([tr_y, te_y]).astype(np.int64))
    return ArrayDataset(name="mnist", images=images, labels=labels, n_train=len(tr_y), num_classes=10)
