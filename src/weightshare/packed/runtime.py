"""The packed trainer's runtime helpers: SIGTERM as a flag, the device, the schedule, the loss dtype.

Kept apart from :mod:`.trainer` so the loop reads as the single run's loop; each helper mirrors
what Lightning's Trainer or ``WeightShareModule`` does for a single run.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import DictConfig

__all__ = ["NothingToTrainError", "TerminatedError", "device_of", "loss_dtype", "lr_factors", "sigterm_flag"]


class TerminatedError(Exception):
    """SIGTERM arrived: stop at the next step boundary."""


class NothingToTrainError(Exception):
    """Every member of a group failed at start (each one's failure is recorded)."""


@contextlib.contextmanager
def sigterm_flag() -> Iterator[dict[str, bool]]:
    """Turn SIGTERM into a flag checked between steps (main thread only; elsewhere a no-op)."""
    flag = {"term": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        flag["term"] = True

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, old)


def device_of(cfg: DictConfig) -> torch.device:
    acc = str(cfg.trainer.accelerator)
    if acc in ("gpu", "cuda"):
        return torch.device("cuda")
    if acc == "mps":
        return torch.device("mps")
    if acc == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def lr_factors(cfg: DictConfig, epochs: int) -> list[float]:
    """The scheduler's factor of each epoch (the single run's schedule on a base rate of 1)."""
    from weightshare.builders import build_scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, cfg.scheduler, cfg.trainer.max_epochs)
    out = []
    for _ in range(epochs):
        out.append(float(opt.param_groups[0]["lr"]))
        if sched is not None:
            opt.step()
            sched.step()
    return out


def loss_dtype(logits: torch.Tensor) -> torch.Tensor:
    """As ``WeightShareModule``: the loss of float64 logits in float64, of others in float32."""
    return logits if logits.dtype == torch.float64 else logits.float()
