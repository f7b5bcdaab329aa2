"""Dataset readers on files the tests write themselves, the real MNIST, downloads, digits, synthetic.

The expected values come from the tests' own writers (numpy arrays written with
``struct``/``pickle``), from the raw bytes of the real files, or from scikit-learn, never
from the reader under test. No test touches the network: an autouse fixture lets
``urlopen`` open only ``file://`` URLs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import pickletools
import struct
import tarfile
from pathlib import Path
from types import SimpleNamespace
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from weightshare.data import DATASETS, ArrayDataset, load_dataset, make_split
from weightshare.data import cifar10 as cifar_mod
from weightshare.data import download as dl
from weightshare.data import mnist as mnist_mod
from weightshare.data.cifar10 import load_cifar10
from weightshare.data.digits import DIGITS_N_TRAIN, load_digits
from weightshare.data.mnist import load_mnist
from weightshare.data.synthetic import SHAPES, generate_synthetic, load_synthetic, shape_mask, side_range
from weightshare.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only file:// URLs may be opened, and torchvision is never used for downloads."""
    real = dl.urlopen

    def guarded(url: str, *args: object, **kwargs: object) -> object:
        if not str(url).startswith("file://"):
            raise AssertionError(f"a test tried to reach the network: {url}")
        return real(url, *args, **kwargs)

    monkeypatch.setattr(dl, "urlopen", guarded)
    monkeypatch.setattr(dl, "torchvision_datasets", lambda: None)


# ----------------------------------------------------------------------------- MNIST helpers
def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array, written independently of the reader."""
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_mnist(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True, seed: int = 0) -> dict:
    """Write the four files into ``folder``; return arrays, raw bytes and md5 sums."""
    rng = np.random.default_rng(seed)
    arrays = {
        MNIST_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        MNIST_NAMES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        MNIST_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        MNIST_NAMES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    raw = {name: idx_bytes(a) for name, a in arrays.items()}
    for name, data in raw.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return {"arrays": arrays, "raw": raw, "md5": {n: md5(d) for n, d in raw.items()}}


# ----------------------------------------------------------------------------- MNIST
@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["MNIST/raw", "."])
def test_mnist_reads_written_files(tmp_path: Path, gz: bool, layout: str) -> None:
    w = write_mnist(tmp_path / layout, gz=gz)
    ds = load_mnist(tmp_path, checksums=w["md5"])
    a = w["arrays"]
    assert ds.name == "mnist" and ds.num_classes == 10 and ds.n_train == 6
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (10, 1, 28, 28)
    assert ds.labels.dtype == torch.int64
    expected_images = np.concatenate([a[MNIST_NAMES[0]], a[MNIST_NAMES[2]]])
    assert np.array_equal(ds.images[:, 0].numpy(), expected_images)
    expected_labels = np.concatenate([a[MNIST_NAMES[1]], a[MNIST_NAMES[3]]]).astype(np.int64)
    assert np.array_equal(ds.labels.numpy(), expected_labels)
    # root may also be the raw folder itself
    again = load_mnist(tmp_path / layout, checksums=w["md5"])
    assert torch.equal(again.images, ds.images)


def test_mnist_published_checksums_reject_other_files(tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw")
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_mnist(tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz") in msg
    assert "6bbc9ace898e44ae57da46a324031adb" in msg  # the published sum is the expectation
    assert load_mnist(tmp_path, verify_checksums=False).n_train == 6


def test_mnist_corrupted_file_fails_its_checksum(tmp_path: Path) -> None:
    raw_dir = tmp_path / "MNIST" / "raw"
    w = write_mnist(raw_dir, gz=False)
    path = raw_dir / "t10k-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[16 + 100] ^= 0xFF  # one pixel of the first test image; the structure stays valid
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_mnist(tmp_path, checksums=w["md5"])
    assert str(path) in str(info.value) and w["md5"]["t10k-images-idx3-ubyte"] in str(info.value)
    ds = load_mnist(tmp_path, verify_checksums=False)  # without verification the flip is read
    assert int(ds.images[6, 0].flatten()[100]) == int(w["arrays"]["t10k-images-idx3-ubyte"][0].flat[100]) ^ 0xFF


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_truncated_idx_names_file_and_sizes(tmp_path: Path, gz: bool) -> None:
    raw_dir = tmp_path / "MNIST" / "raw"
    w = write_mnist(raw_dir, gz=gz)
    full = w["raw"]["train-images-idx3-ubyte"]
    expected = 16 + 6 * 28 * 28
    assert len(full) == expected
    cut = full[: expected - 100]
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    (raw_dir / name).write_bytes(gzip.compress(cut) if gz else cut)
    with pytest.raises(DataError, match="truncated IDX file") as info:
        load_mnist(tmp_path, verify_checksums=False)
    msg = str(info.value)
    assert str(raw_dir / name) in msg and str(expected) in msg and str(expected - 100) in msg


def test_mnist_truncated_gzip_stream(tmp_path: Path) -> None:
    raw_dir = tmp_path / "MNIST" / "raw"
    write_mnist(raw_dir)
    path = raw_dir / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match="truncated gzip") as info:
        load_mnist(tmp_path, verify_checksums=False)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("train-images-idx3-ubyte", b"\x01\x02\x08\x03" + b"\x00" * 12, "magic number"),
        ("train-images-idx3-ubyte", b"\x00\x00\x07\x03" + b"\x00" * 12, "type code 0x07"),
        ("train-images-idx3-ubyte", b"\x00\x00", "shorter than"),
        ("train-images-idx3-ubyte", idx_bytes(np.zeros((6, 32, 32), np.uint8)), "28x28"),
        ("train-images-idx3-ubyte", idx_bytes(np.zeros((6, 784), np.uint8)), r"dims \(N, 28, 28\)"),
        ("train-images-idx3-ubyte", idx_bytes(np.zeros((6, 28, 28), np.uint8)) + b"\x00", "trailing bytes"),
        ("train-labels-idx1-ubyte", idx_bytes(np.zeros(5, np.uint8)), "5 labels"),
        ("train-labels-idx1-ubyte", idx_bytes(np.full(6, 10, np.uint8)), "label 10"),
        (
            "train-labels-idx1-ubyte",
            bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 6) + np.zeros(6, ">i4").tobytes(),
            "unsigned bytes",
        ),
    ],
)
def test_mnist_malformed_files_name_the_file(tmp_path: Path, name: str, content: bytes, pattern: str) -> None:
    raw_dir = tmp_path / "MNIST" / "raw"
    write_mnist(raw_dir, gz=False)
    (raw_dir / name).write_bytes(content)
    with pytest.raises(DataError, match=pattern) as info:
        load_mnist(tmp_path, verify_checksums=False)
    assert str(raw_dir / name) in str(info.value)


def test_mnist_missing_files_list_every_searched_path(tmp_path: Path) -> None:
    w = write_mnist(tmp_path / "MNIST" / "raw")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, checksums=w["md5"])
    msg = str(info.value)
    assert "MNIST files not found" in msg
    assert f"{tmp_path / 'MNIST' / 'raw'} (missing t10k-labels-idx1-ubyte)" in msg
    assert f"{tmp_path} (nothing found)" in msg
    assert "data.root=/path/containing/MNIST/raw" in msg and "data.download=false" in msg
    assert "\n" not in msg
    with pytest.raises(DataError, match="nothing found"):
        load_dataset("mnist", tmp_path / "does-not-exist")


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason=f"real MNIST absent ({SHARED_DATA})")
def test_real_mnist() -> None:
    ds = load_dataset("mnist", SHARED_DATA)  # verify_checksums=True: the published md5 sums
    assert ds.images.shape == (70_000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.shape == (70_000,) and ds.labels.dtype == torch.int64
    assert ds.n_train == 60_000 and ds.num_classes == 10
    assert int(ds.labels[0]) == 5 and int(ds.labels[60_000]) == 7
    raw_dir = SHARED_DATA / "MNIST" / "raw"
    with gzip.open(raw_dir / "train-images-idx3-ubyte.gz") as f:
        first_train = f.read(16 + 784)[16:]
    with gzip.open(raw_dir / "t10k-images-idx3-ubyte.gz") as f:
        first_test = f.read(16 + 784)[16:]
    assert int(ds.images[0].sum()) == sum(first_train)
    assert int(ds.images[60_000].sum()) == sum(first_test)
    assert ds.images[0, 0, 14].tolist() == list(first_train[14 * 28 : 15 * 28])
    counts = torch.bincount(ds.labels[:60_000], minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert load_mnist(raw_dir).n_train == 60_000  # root = the raw folder itself


# ----------------------------------------------------------------------------- CIFAR-10 helpers
def py2_pickle(obj: object) -> bytes:
    """A pickle shaped like the original Python 2 ``cPickle`` files of CIFAR-10.

    Pickled at protocol 3, then rewritten op by op: protocol 2, strings and bytes as
    ``SHORT_BINSTRING``/``BINSTRING`` (Python 2 ``str``) and numpy's ``numpy.core`` module
    name, which is what the distribution's files contain.
    """
    data = pickle.dumps(obj, protocol=3)
    ops = list(pickletools.genops(data))
    out = bytearray()
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        if op.name == "PROTO":
            out += b"\x80\x02"
        elif op.name in ("SHORT_BINBYTES", "BINBYTES", "BINUNICODE", "SHORT_BINUNICODE"):
            b = arg if isinstance(arg, bytes) else arg.encode("ascii")
            out += (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b
        elif op.name == "GLOBAL":
            out += data[pos:end].replace(b"numpy._core.", b"numpy.core.")
        else:
            out += data[pos:end]
    return bytes(out)


def cifar_batch(n: int, rng: np.random.Generator, label: str = "training batch") -> dict:
    return {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar(folder: Path, n_batch: int = 3, n_test: int = 4, style: str = "py2") -> dict:
    """Write the seven files; return the batches and the md5 of every file."""
    rng = np.random.default_rng(1)
    dump = py2_pickle if style == "py2" else (lambda o: pickle.dumps(o, protocol=3))
    folder.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i}": cifar_batch(n_batch, rng) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(n_test, rng, "testing batch")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    files = {name: dump(b) for name, b in batches.items()}
    files["batches.meta"] = dump(
        {b"num_cases_per_batch": n_batch, b"label_names": [n.encode() for n in names], b"num_vis": 3072}
    )
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {"batches": batches, "md5": {n: md5(d) for n, d in files.items()}}


# ----------------------------------------------------------------------------- CIFAR-10
@pytest.mark.parametrize("style", ["py2", "py3"])
@pytest.mark.parametrize("layout", ["cifar-10-batches-py", "."])
def test_cifar_reads_written_files(tmp_path: Path, style: str, layout: str) -> None:
    w = write_cifar(tmp_path / layout, style=style)
    if style == "py2":  # the rewrite worked: Python 2 strings and module names only
        raw = (tmp_path / layout / "data_batch_1").read_bytes()
        ops = {op.name for op, _, _ in pickletools.genops(raw)}
        assert b"cnumpy.core.multiarray\n_reconstruct" in raw and raw[:2] == b"\x80\x02"
        assert "SHORT_BINSTRING" in ops and not ops & {"BINUNICODE", "SHORT_BINBYTES", "BINBYTES"}
    ds = load_cifar10(tmp_path, checksums=w["md5"])
    order = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    expected = np.concatenate([w["batches"][n][b"data"] for n in order])
    labels = np.concatenate([w["batches"][n][b"labels"] for n in order])
    assert ds.name == "cifar10" and ds.n_train == 15 and ds.num_classes == 10
    assert ds.images.shape == (19, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert np.array_equal(ds.images.reshape(19, -1).numpy(), expected)
    assert np.array_equal(ds.labels.numpy(), labels) and ds.labels.dtype == torch.int64
    # channel layout: the first 1024 values of a row are the red plane, row-major
    first = w["batches"]["data_batch_1"][b"data"][0]
    assert np.array_equal(ds.images[0, 0].numpy(), first[:1024].reshape(32, 32))
    assert np.array_equal(ds.images[0, 2, 5].numpy(), first[2048 + 5 * 32 : 2048 + 6 * 32])


def test_cifar_published_checksums_reject_other_files(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py")
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset("cifar10", tmp_path)
    assert "cifar-10-batches-py" in str(info.value)
    assert any(m in str(info.value) for m in cifar_mod.CIFAR10_MD5.values())
    assert load_dataset("cifar10", tmp_path, verify_checksums=False).n_train == 15


def test_cifar_corrupted_file_fails_its_checksum(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    w = write_cifar(folder)
    path = folder / "data_batch_3"
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_cifar10(tmp_path, checksums=w["md5"])
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"this is not a pickle", "malformed pickle"),
        (
            py2_pickle({b"data": np.zeros((3, 3072), np.uint8), b"labels": [1, 2, 3]})[:-30],
            "malformed pickle",
        ),
        (pickle.dumps([1, 2, 3], protocol=3), "expected a dict"),
        (pickle.dumps({b"data": np.zeros((3, 3072), np.uint8)}, protocol=3), "missing key"),
        (
            pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0] * 3}, protocol=3),
            r"\(3, 100\)",
        ),
        (pickle.dumps({b"data": np.zeros((3, 3072), np.float32), b"labels": [0] * 3}, protocol=3), "float32"),
        (pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}, protocol=3), "3 images"),
        (pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 10]}, protocol=3), "0..9"),
        (
            pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [b"x"] * 3}, protocol=3),
            "integers",
        ),
    ],
)
def test_cifar_malformed_batch_names_the_file(tmp_path: Path, content: bytes, pattern: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    w = write_cifar(folder)
    (folder / "data_batch_2").write_bytes(content)
    checksums = {**w["md5"], "data_batch_2": md5(content)}  # the checksum passes: the parser must catch it
    with pytest.raises(DataError, match=pattern) as info:
        load_cifar10(tmp_path, checksums=checksums)
    assert str(folder / "data_batch_2") in str(info.value)


def test_cifar_malformed_meta(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=3))
    with pytest.raises(DataError, match="label_names") as info:
        load_cifar10(tmp_path, verify_checksums=False)
    assert str(folder / "batches.meta") in str(info.value)


class _OpenPayload:
    """Unpickling calls ``open(marker, 'w')``: creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


class _ExecPayload:
    """Unpickling calls ``exec`` on code that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_OpenPayload, _ExecPayload])
def test_cifar_malicious_pickle_runs_no_code(tmp_path: Path, payload: type) -> None:
    # control: a plain pickle.loads of the same kind of file does create its marker
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps({b"data": payload(control), b"labels": []}, protocol=2))
    assert control.exists()

    folder = tmp_path / "cifar-10-batches-py"
    w = write_cifar(folder)
    marker = tmp_path / "marker"
    evil = pickle.dumps({b"data": payload(marker), b"labels": []}, protocol=2)
    (folder / "data_batch_1").write_bytes(evil)
    with pytest.raises(DataError, match="refused to unpickle") as info:
        load_cifar10(tmp_path, checksums={**w["md5"], "data_batch_1": md5(evil)})
    assert str(folder / "data_batch_1") in str(info.value)
    assert not marker.exists()


def test_cifar_missing_files_list_every_searched_path(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path)
    msg = str(info.value)
    assert f"{folder} (missing test_batch)" in msg and f"{tmp_path} (nothing found)" in msg
    assert "data.root=/path/containing/cifar-10-batches-py" in msg and "data.download=false" in msg


# ----------------------------------------------------------------------------- downloads
def test_mnist_download_from_second_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    w = write_mnist(mirror)
    monkeypatch.setattr(mnist_mod, "MNIST_MIRRORS", [(tmp_path / "absent").as_uri() + "/", mirror.as_uri() + "/"])
    root = tmp_path / "data"
    ds = load_mnist(root, download=True, checksums=w["md5"])
    assert ds.n_train == 6
    raw_dir = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(f"{n}.gz" for n in MNIST_NAMES)
    assert (raw_dir / "t10k-images-idx3-ubyte.gz").read_bytes() == (mirror / "t10k-images-idx3-ubyte.gz").read_bytes()


def test_mnist_download_skips_a_mirror_with_a_bad_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    w = write_mnist(good)
    write_mnist(bad, seed=7)  # valid IDX files, other content: the md5 check must reject them
    monkeypatch.setattr(mnist_mod, "MNIST_MIRRORS", [bad.as_uri() + "/"])
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path / "data", download=True, checksums=w["md5"])
    assert "checksum mismatch" in str(info.value) and "MNIST files not found" in str(info.value)
    assert not list((tmp_path / "data" / "MNIST" / "raw").glob("*"))  # nothing half-written left
    monkeypatch.setattr(mnist_mod, "MNIST_MIRRORS", [bad.as_uri() + "/", good.as_uri() + "/"])
    ds = load_mnist(tmp_path / "data", download=True, checksums=w["md5"])
    assert np.array_equal(ds.images[:6, 0].numpy(), w["arrays"]["train-images-idx3-ubyte"])


def test_offline_download_error_says_where_and_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def offline(url: str, *args: object, **kwargs: object) -> object:
        calls.append(url)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(dl, "urlopen", offline)
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        load_dataset("mnist", root, download=True)
    msg = str(info.value)
    assert str(root / "MNIST" / "raw") in msg and f"{root} (nothing found)" in msg
    assert "Temporary failure in name resolution" in msg and "data.root=" in msg
    assert calls[:2] == [m + "train-images-idx3-ubyte.gz" for m in mnist_mod.MNIST_MIRRORS]
    assert not list((root / "MNIST" / "raw").glob("*"))
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz") as info:
        load_dataset("cifar10", root, download=True)
    assert str(root / "cifar-10-batches-py") in str(info.value) and "data.root=" in str(info.value)


def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_cifar_download_and_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src" / "cifar-10-batches-py"
    w = write_cifar(src)
    archive = _tar_gz(
        tmp_path / "cifar-10-python.tar.gz",
        {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in sorted(src.iterdir())},
    )
    monkeypatch.setattr(cifar_mod, "CIFAR10_ARCHIVE_URLS", [archive.as_uri()])
    monkeypatch.setattr(cifar_mod, "CIFAR10_ARCHIVE_MD5", "0" * 32)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="downloaded file has md5"):
        load_cifar10(root, download=True, checksums=w["md5"])
    monkeypatch.setattr(cifar_mod, "CIFAR10_ARCHIVE_MD5", md5(archive.read_bytes()))
    ds = load_cifar10(root, download=True, checksums=w["md5"])
    assert ds.n_train == 15 and (root / "cifar-10-python.tar.gz").is_file()
    assert (root / "cifar-10-batches-py" / "test_batch").read_bytes() == (src / "test_batch").read_bytes()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_safe_extract_refuses_escaping_members(tmp_path: Path, kind: str) -> None:
    dest = tmp_path / "dest"
    outside = tmp_path / "evil.txt"
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        ok = tarfile.TarInfo("cifar-10-batches-py/fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        if kind == "symlink":
            info = tarfile.TarInfo("cifar-10-batches-py/link")
            info.type = tarfile.SYMTYPE
            info.linkname = str(outside)
            tar.addfile(info)
        else:
            info = tarfile.TarInfo("../evil.txt" if kind == "dotdot" else str(outside))
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(DataError, match="refused to extract") as err:
        dl.safe_extract_tar(archive, dest)
    assert str(archive) in str(err.value)
    assert not outside.exists() and not (dest / "cifar-10-batches-py" / "fine.txt").exists()


def test_torchvision_is_used_for_downloads_when_it_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []

    def fake_mnist(root: str, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        write_mnist(Path(root) / "MNIST" / "raw", gz=False)

    def failing_cifar(root: str, train: bool, download: bool) -> None:
        raise RuntimeError("Dataset not found or corrupted.")

    fake = SimpleNamespace(MNIST=fake_mnist, CIFAR10=failing_cifar)
    monkeypatch.setattr(dl, "torchvision_datasets", lambda: fake)
    ds = load_mnist(tmp_path, download=True, verify_checksums=False)
    assert calls == [(str(tmp_path), True, True)] and ds.n_train == 6
    with pytest.raises(DataError, match=r"torchvision could not download CIFAR-10.*Dataset not found"):
        load_cifar10(tmp_path, download=True)


# ----------------------------------------------------------------------------- registry
def test_registry_dispatch_and_errors() -> None:
    assert list(DATASETS) == ["mnist", "cifar10", "digits", "synthetic"]
    with pytest.raises(ConfigError) as info:
        load_dataset("imagenet", "/nowhere")
    assert info.value.key == "data.name" and "['mnist', 'cifar10', 'digits', 'synthetic']" in str(info.value)
    allowed = r"one of \['size', 'image_size', 'seed', 'noise_std'\]"
    with pytest.raises(ConfigError, match=r"data\.options\.colour=.*" + allowed):
        load_dataset("synthetic", None, colour=True)
    ds = load_dataset("synthetic", None, size=40, image_size=16, seed=3)
    assert isinstance(ds, ArrayDataset) and ds.images.shape == (40, 1, 16, 16)


def test_array_dataset_checks_its_contract() -> None:
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3])
    ArrayDataset("x", images, labels, 3, 4)
    with pytest.raises(DataError, match="uint8"):
        ArrayDataset("x", images.float(), labels, 3, 4)
    with pytest.raises(DataError, match="int64"):
        ArrayDataset("x", images, labels.int(), 3, 4)
    with pytest.raises(DataError, match="4 images but 3 labels"):
        ArrayDataset("x", images, labels[:3], 3, 4)
    with pytest.raises(DataError, match="n_train=5"):
        ArrayDataset("x", images, labels, 5, 4)
    with pytest.raises(DataError, match="expected \\[0, 2\\]"):
        ArrayDataset("x", images, labels, 3, 3)


# ----------------------------------------------------------------------------- digits
def _bilinear_reference(img: np.ndarray, size: int) -> np.ndarray:
    """Half-pixel-centre bilinear upsampling with edge clamping, written out in numpy."""
    n = img.shape[0]
    src = (np.arange(size) + 0.5) * n / size - 0.5
    src = np.clip(src, 0, None)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    w = src - i0
    rows = img[i0] * (1 - w)[:, None] + img[i1] * w[:, None]
    return rows[:, i0] * (1 - w)[None, :] + rows[:, i1] * w[None, :]


def test_digits_matches_sklearn_and_an_independent_resize() -> None:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    ds = load_digits()
    assert ds.images.shape == (1797, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and np.array_equal(ds.labels.numpy(), bunch.target)
    assert ds.n_train == DIGITS_N_TRAIN == 1438 and ds.num_classes == 10
    ref = np.stack([_bilinear_reference(im, 28) for im in bunch.images]) * 255 / 16
    got = ds.images[:, 0].numpy().astype(np.float64)
    assert np.abs(got - ref).max() <= 0.5 + 1e-9  # rounding to the nearest integer
    assert np.mean(got == np.round(ref)) > 0.999
    # torch's own interpolate agrees with the reference too (same convention)
    t = F.interpolate(torch.from_numpy(bunch.images[:5, None]), size=(28, 28), mode="bilinear", align_corners=False)
    assert np.allclose(t[:, 0].numpy(), ref[:5] * 16 / 255)
    small = load_digits(image_size=8)
    assert np.array_equal(small.images[:, 0].numpy(), np.round(bunch.images * 255 / 16).astype(np.uint8))
    assert int(small.images.max()) == 255 and int(small.images.min()) == 0


def test_digits_standard_split_is_the_last_kfold_fold() -> None:
    ds = load_dataset("digits", None, image_size=12)
    assert ds.images.shape == (1797, 1, 12, 12)
    standard = make_split("standard", len(ds), ds.n_train)
    kfold = make_split("kfold", len(ds), ds.n_train, fold=4)
    assert torch.equal(standard.val_idx, kfold.val_idx) and len(standard.val_idx) == 359
    with pytest.raises(ConfigError, match=r"data\.options\.image_size"):
        load_digits(image_size=7)


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_and_shaped() -> None:
    a, b = load_synthetic(size=300, seed=5), load_synthetic(size=300, seed=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = load_synthetic(size=300, seed=6)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.labels, c.labels)
    assert a.images.shape == (300, 1, 28, 28) and a.images.dtype == torch.uint8
    assert a.labels.dtype == torch.int64 and a.num_classes == 10 and a.n_train == 240
    assert np.array_equal(a.images.numpy(), generate_synthetic(300, 28, 5).images)


@pytest.mark.parametrize("size", [2048, 1003, 16])
def test_synthetic_classes_are_balanced(size: int) -> None:
    counts = torch.bincount(load_synthetic(size=size).labels, minlength=10)
    assert int(counts.max()) - int(counts.min()) <= 1 and int(counts.sum()) == size


@pytest.mark.parametrize("image_size", [12, 28, 32])
def test_synthetic_shapes_are_distinct(image_size: int) -> None:
    lo, hi = side_range(image_size)
    assert lo <= hi <= image_size // 2
    for side in range(lo, hi + 1):
        masks = [shape_mask(s, side).tobytes() for s in SHAPES]
        assert len(set(masks)) == len(SHAPES)


@pytest.mark.parametrize("image_size", [12, 28, 31])
def test_synthetic_label_is_shape_and_half(image_size: int) -> None:
    """Read from the pixels: the label is a bijection of (shape drawn, half it lies in)."""
    g = generate_synthetic(500, image_size, seed=2, noise_std=0.0)
    s = image_size
    seen: dict[tuple[int, int], set[int]] = {}
    for i in range(500):
        img = g.images[i, 0]
        ys, _ = np.nonzero(img)
        half = 0 if ys.max() < s // 2 else 1
        assert ys.min() >= (0 if half == 0 else s - s // 2)  # entirely inside one half
        r, c, side = int(g.rows[i]), int(g.cols[i]), int(g.sides[i])
        shape = SHAPES[int(g.labels[i]) % 5]
        expected = np.zeros_like(img)
        expected[r : r + side, c : c + side][shape_mask(shape, side)] = g.intensities[i]
        assert np.array_equal(img, expected)
        seen.setdefault((int(g.shapes[i]), half), set()).add(int(g.labels[i]))
    assert len(seen) == 10 and all(len(v) == 1 for v in seen.values())
    labels = {next(iter(v)) for v in seen.values()}
    assert labels == set(range(10))  # the same shape in the other half is another class
    for k in range(5):
        assert seen[(k, 0)] != seen[(k, 1)]


def test_synthetic_position_is_visible_through_the_noise() -> None:
    ds = load_synthetic(size=1000, image_size=28, seed=1)
    img = ds.images[:, 0].double()
    bottom = img[:, 14:].sum((1, 2)) > img[:, :14].sum((1, 2))
    assert torch.equal(bottom, ds.labels >= 5)
    assert 0 < float((img > 0).double().mean()) < 1  # noise is present, not saturated


def test_synthetic_bad_options() -> None:
    with pytest.raises(ConfigError, match=r"data\.options\.image_size"):
        load_synthetic(image_size=8)
    with pytest.raises(ConfigError, match=r"data\.options\.size"):
        load_synthetic(size=0)
