"""Checksums, file lookup, downloads and safe archive extraction for the dataset readers.

Why not torchvision's helpers: torchvision is an optional extra of this project (the
readers use ``torchvision.datasets`` for downloading when it imports), and its helpers
neither report every path that was searched nor refuse archive members that would land
outside the target folder on every Python version. These few functions do exactly that,
with the standard library only, and raise :class:`~weightshare.errors.DataError` naming
the file.

Tests never touch the network: they point the mirror lists at ``file://`` URLs in a
temporary folder or replace :data:`urlopen` (looked up on this module at call time).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from types import ModuleType
from urllib.error import URLError
from urllib.request import urlopen

from weightshare.errors import DataError

__all__ = [
    "check_md5",
    "fetch",
    "find_in_dirs",
    "locate_or_download",
    "md5_bytes",
    "md5_file",
    "safe_extract_tar",
    "torchvision_datasets",
    "unique_dirs",
    "urlopen",
]

_CHUNK = 1 << 20


def md5_bytes(data: bytes) -> str:
    """md5 hex digest of ``data`` (MNIST's published sums are of the uncompressed bytes)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: Path) -> str:
    """md5 hex digest of a file, read in chunks so large archives need little memory."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def check_md5(path: Path, actual: str, expected: str, *, what: str = "md5") -> None:
    """Raise a DataError naming ``path`` when ``actual`` differs from ``expected``."""
    if actual.lower() != expected.lower():
        raise DataError(
            f"checksum mismatch for {path}: {what} is {actual}, expected {expected} "
            f"(the file is corrupted or not the published one: delete it and download it again, "
            f"or set data.verify_checksums=false to read a modified copy)"
        )


def find_in_dirs(
    dirs: Sequence[Path], names: Sequence[str], suffixes: Sequence[str] = ("",)
) -> tuple[dict[str, Path] | None, list[str]]:
    """Find the first folder of ``dirs`` that holds every file of ``names``.

    A name matches ``name + suffix`` for the first suffix that exists (e.g. ``("", ".gz")``
    prefers an uncompressed copy). Returns ``(name -> path, report)``; the mapping is None
    when no folder holds them all, and ``report`` then lists every folder searched with
    what was missing there, for the error message.
    """
    report: list[str] = []
    for d in dirs:
        found: dict[str, Path] = {}
        missing: list[str] = []
        for name in names:
            hit = next((d / (name + s) for s in suffixes if (d / (name + s)).is_file()), None)
            if hit is None:
                missing.append(name)
            else:
                found[name] = hit
        if not missing:
            return found, report
        what = "nothing found" if len(missing) == len(names) else "missing " + ", ".join(missing)
        report.append(f"{d} ({what})")
    return None, report


def unique_dirs(dirs: Iterable[Path]) -> list[Path]:
    """Drop repeated folders (``root`` may already be the raw folder), keeping the order."""
    out: list[Path] = []
    seen: set[Path] = set()
    for d in dirs:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def fetch(
    urls: Sequence[str],
    dest: Path,
    *,
    md5: str | None = None,
    check: Callable[[Path], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the first of ``urls`` that works into ``dest``, verified, atomically.

    Each mirror is tried in turn; a download that fails or fails its check (``md5`` of the
    downloaded file, and/or ``check(path)`` raising DataError) moves on to the next mirror.
    The data goes to a temporary file beside ``dest`` and is renamed only when verified,
    so an interrupted download never leaves a half file under the real name. Raises
    DataError listing every URL and why it failed.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the download folder {dest.parent}: {exc}") from exc
    failures: list[str] = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urlopen(url, timeout=timeout) as resp:
                shutil.copyfileobj(resp, out, _CHUNK)
            if md5 is not None and (got := md5_file(tmp)) != md5.lower():
                raise DataError(f"downloaded file has md5 {got}, expected {md5}")
            if check is not None:
                check(tmp)
            os.replace(tmp, dest)
            return dest
        except (URLError, OSError, ValueError, http.client.HTTPException) as exc:
            # DataError is an OSError: a checksum failure also moves on to the next mirror.
            failures.append(f"{url}: {exc}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    raise DataError(f"could not download {dest.name}: " + "; ".join(failures))


def safe_extract_tar(archive: Path, dest: Path) -> list[Path]:
    """Extract a tar archive into ``dest``, refusing anything that could escape it.

    Every member must be a plain file or folder with a relative path that stays inside
    ``dest`` (no absolute paths, no ``..``, no links or device files). The check runs over
    all members before anything is written. Where Python offers the ``data`` extraction
    filter (3.12, and 3.11.4 / 3.10.12 backports) it is applied as well.
    """
    root = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                parts = PurePosixPath(m.name).parts
                if not (m.isfile() or m.isdir()):
                    raise DataError(
                        f"{archive}: refused to extract {m.name!r}: links and special files are not allowed"
                    )
                target = (root / m.name).resolve()
                if m.name.startswith(("/", "\\")) or ".." in parts or not target.is_relative_to(root):
                    raise DataError(f"{archive}: refused to extract {m.name!r}: its path leads outside {dest}")
            dest.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - old Python without extraction filters
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError) as exc:
        raise DataError(f"{archive}: not a readable tar archive: {exc}") from exc
    return [dest / m.name for m in members if m.isfile()]


def torchvision_datasets() -> ModuleType | None:
    """``torchvision.datasets`` when torchvision imports, else None (own downloader)."""
    try:
        import torchvision.datasets as tvd
    except Exception:  # torchvision absent or broken against this torch: use our own
        return None
    return tvd


def torchvision_download(dataset_class: str, label: str, root: Path) -> bool:
    """Download through ``torchvision.datasets.<dataset_class>`` when torchvision imports.

    Returns False when it does not (the caller uses the project's own downloader); a failed
    torchvision download is a DataError naming ``label`` and ``root``.
    """
    tvd = torchvision_datasets()
    if tvd is None:
        return False
    try:
        getattr(tvd, dataset_class)(str(root), train=True, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError alike
        raise DataError(f"torchvision could not download {label} into {root}: {exc}") from exc
    return True


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    out = []
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def _remove_empty(dirs: Sequence[Path]) -> None:
    """Remove the folders a failed download created, deepest first, while they are empty."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return  # not empty (a partial file to resume) or gone: keep the rest


def locate_or_download(
    dataset: str,
    dirs: Sequence[Path],
    names: Sequence[str],
    *,
    suffixes: Sequence[str] = ("",),
    download: bool,
    fetch_all: Callable[[], None],
    download_dir: Path,
    hint: str,
) -> dict[str, Path]:
    """Find the dataset's files in ``dirs``; when missing, download (if allowed) and look again.

    Every failure is one DataError line: which files were looked for, every folder
    searched with what was missing there, why no download helped, and how to point
    ``data.root`` at the files (``hint``).
    """
    found, report = find_in_dirs(dirs, names, suffixes)
    if found is not None:
        return found
    shown = [n + (f"[{'|'.join(s for s in suffixes if s)}]" if len(suffixes) > 1 else "") for n in names]
    looked = f"{dataset} files not found: looked for {', '.join(shown)} in " + "; ".join(report)
    if not download:
        raise DataError(
            f"{looked}. Download is off (data.download=false). {hint}, "
            f"or set data.download=true on a machine with internet access"
        )
    created = _missing_dirs(download_dir)
    try:
        fetch_all()
    except DataError as exc:
        _remove_empty(created)  # a failed download leaves no empty <root>/MNIST/raw behind
        raise DataError(
            f"{looked}. Downloading them into {download_dir} failed: {exc}. {hint}, "
            f"or download them on a machine with internet access and copy them there"
        ) from exc
    found, report = find_in_dirs(dirs, names, suffixes)
    if found is None:
        raise DataError(f"{dataset} files still missing after the download into {download_dir}: " + "; ".join(report))
    return found
