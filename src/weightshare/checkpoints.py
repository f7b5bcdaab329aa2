"""Checkpoint files: atomic writes, and safe, verified loads.

Writing: :func:`atomic_torch_save` (and :class:`AtomicCheckpointIO`, the Lightning plugin
every Trainer of the project uses) serialises to memory, writes a temporary file in the
target directory, flushes and fsyncs it, then renames it over the final name. Why not
Lightning's own writer: ``TorchCheckpointIO`` writes through an fsspec transaction that
stages the file in ``$TMPDIR`` and *copies* it into place (``shutil.move`` across
filesystems), so a kill or a full disk during the copy left a truncated ``last.ckpt`` or
``best.ckpt`` under its final name. Here a file under a final name is always complete, and
the temporary file is removed whatever stops the write (an exception, ENOSPC, Ctrl+C); only
SIGKILL can leave one (``.last.ckpt.*.tmp``), never under a final name.

Loading: every checkpoint is read with ``torch.load(..., weights_only=True)``: the unpickler
then only rebuilds tensors and plain containers, so a crafted file cannot run code. Before
that, :func:`verify_checkpoint_file` checks the zip container and every member's CRC (torch
itself does not: a flipped byte loads as silently wrong weights), so a truncated or
corrupt file is a :class:`~weightshare.errors.CheckpointError` that says so and names what
can be used instead.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from weightshare.errors import CheckpointError

#: the first bytes of a zip file (torch.save's format since torch 1.6)
_ZIP_MAGIC = b"PK\x03\x04"


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory, fsync, and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # what open() would give, not mkstemp's 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # name the file a full disk stopped (os.write names none)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (a crash of the machine could otherwise undo it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not fsync directories; the rename is still atomic
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)``, never leaving a partial file under ``path`` (see the module docstring)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(buffer.getbuffer(), path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with :func:`atomic_torch_save` as its writer (local paths only)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)  # remote: fsspec's transaction
        atomic_torch_save(checkpoint, path)


def _alternatives(path: Path) -> str:
    """What to use instead of a damaged checkpoint: a sound ``best.ckpt`` beside it, or starting over."""
    best = path.with_name("best.ckpt")
    start_over = f"or start over (without ckpt_path/resume, in a new hydra.run.dir or after deleting {path.parent})"
    if best != path and best.is_file() and _damage(best) is None:
        return f"use ckpt_path={best} (the best epoch; later epochs are retrained), {start_over}"
    return start_over


def _damage(path: Path) -> str | None:
    """Why the file at ``path`` is truncated or corrupt, or None if its container is sound."""
    size = path.stat().st_size
    if size == 0:
        return "0 bytes"
    with path.open("rb") as fh:
        head = fh.read(4)
    if head != _ZIP_MAGIC:
        return None  # not a zip: torch's legacy format or a plain pickle, judged by the loader
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"{size} bytes, not a complete zip archive ({exc})"
    if bad is not None:
        return f"member {bad} fails its CRC check"
    return None


def verify_checkpoint_file(path: str | Path) -> None:
    """A :class:`CheckpointError` if ``path`` is missing, truncated or corrupt (names what to use instead)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p} (pass ckpt_path / model.init_from as a .ckpt file)")
    damage = _damage(p)
    if damage is not None:
        raise CheckpointError(f"checkpoint {p} is truncated or corrupt ({damage}); {_alternatives(p)}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file as a dict with weights only (no arbitrary code), after verifying it."""
    p = Path(path)
    verify_checkpoint_file(p)
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, ValueError, EOFError, OSError) as exc:
        if type(exc).__module__.startswith("submitit"):  # raised by submitit's time-limit signal handler
            raise  # mid-load: the job is being stopped, the file is not at fault
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            raise CheckpointError(
                f"refusing to load checkpoint {p}: it is not a weights-only file ({first}); "
                "only tensors and plain containers are accepted"
            ) from None
        raise CheckpointError(f"checkpoint {p} is truncated or corrupt ({first}); {_alternatives(p)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {p} holds a {type(obj).__name__}, expected a dict")
    return obj


def module_state(ckpt: dict[str, Any], prefix: str, path: str | Path) -> dict[str, torch.Tensor]:
    """The entries of ``ckpt['state_dict']`` under ``prefix`` (prefix stripped)."""
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} has no 'state_dict' (is it a Lightning checkpoint?)")
    out = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not out:
        raise CheckpointError(f"checkpoint {path} has no weights under '{prefix}'")
    return out
