"""Safe checkpoint loading.

Every checkpoint is read with ``torch.load(..., weights_only=True)``: the unpickler then only
rebuilds tensors and plain containers, so a crafted file cannot run code. A file that needs
more than that is refused with :class:`~weightshare.errors.CheckpointError`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from weightshare.errors import CheckpointError


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file as a dict with weights only (no arbitrary code)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p} (pass ckpt_path / model.init_from as a .ckpt file)")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, ValueError, EOFError) as exc:
        if type(exc).__module__.startswith("submitit"):  # raised by submitit's time-limit signal handler
            raise  # mid-load: the job is being stopped, the file is not at fault
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"refusing to load checkpoint {p}: it is not a weights-only file ({first}); "
            "only tensors and plain containers are accepted"
        ) from None
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
