"""What a run prints while it trains: the progress display, and Lightning's noise kept out.

Progress (``callbacks.progress_bar``):

- ``rich`` (default) / ``tqdm``: Lightning's live bars, on a terminal; without ``v_num``
  (the logger's version number, a 0 that means nothing here).
- ``lines``: one log line per epoch (``epoch 3/15  train/loss 0.231  val/acc 0.941  2.1 s``),
  through the ``weightshare`` logger, so it reaches the console and the run's log file.
- ``none``: nothing (tests).

``rich`` and ``tqdm`` fall back to ``lines`` when the stream they draw on is not a terminal
(CI, a log file, a job whose output is piped): a live bar there is one carriage return per
refresh, and a log of thousands of overwritten lines is unreadable.

Noise (:func:`quiet_lightning`): Lightning's advertisement for its cloud logger (a "Tip"
printed by every Trainer), and its ``srun`` warning. The latter fires whenever an ``srun``
executable is on PATH (any SLURM login node) and the process was not started by ``srun``;
it guards multi-process training (several devices or nodes), which would hang without
``srun``. A one-device, one-node job (every job of this project's configs) is one process,
so the warning is silenced for those only. Lightning's model summary (whose "Total FLOPs: 0"
counts nothing without an example input) is off in ``conf/trainer/default.yaml``: the run's
first log line gives the parameter count.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import IO, Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

from weightshare.config.schema import PROGRESS_BARS
from weightshare.errors import ConfigError

__all__ = ["EpochLines", "build_progress_bar", "quiet_lightning"]

log = logging.getLogger("weightshare")

#: the metrics an epoch line shows, in this order, when the run logged them
LINE_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best")


def _without_version(metrics: dict[str, Any]) -> dict[str, Any]:
    metrics.pop("v_num", None)
    return metrics


class RichBar(RichProgressBar):
    """Lightning's Rich bar without ``v_num``."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return _without_version(super().get_metrics(trainer, pl_module))


class TqdmBar(TQDMProgressBar):
    """Lightning's tqdm bar without ``v_num``."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return _without_version(super().get_metrics(trainer, pl_module))


def _fmt(value: Any) -> str:
    value = float(value)
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.4g}"


class EpochLines(ProgressBar):
    """One log line per trained epoch and one for the test pass: progress for logs and pipes.

    A Lightning ``ProgressBar`` (not a plain callback) so that the Trainer adds no bar of its
    own beside it. The line of epoch ``e`` (counted from 0, as ``metrics.csv``) reads
    ``epoch e/N-1`` with the last epoch the run may reach, then the values of
    :data:`LINE_METRICS` logged this epoch and the epoch's wall time.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._t0 = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def epoch_line(self, trainer: pl.Trainer) -> str:
        metrics = trainer.callback_metrics
        values = [f"{k} {_fmt(metrics[k])}" for k in LINE_METRICS if k in metrics]
        last = f"/{trainer.max_epochs - 1}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        elapsed = time.perf_counter() - self._t0
        return "  ".join([f"epoch {trainer.current_epoch}{last}", *values, f"{elapsed:.1f} s"])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero and not trainer.sanity_checking:
            log.info("%s", self.epoch_line(trainer))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero:
            acc = trainer.callback_metrics.get("test/acc")
            log.info("test pass%s", f": test/acc {_fmt(acc)}" if acc is not None else " done")


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def build_progress_bar(kind: str, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> ProgressBar | None:
    """The progress callback of ``callbacks.progress_bar`` (``None`` for ``none``).

    Rich draws on stdout, tqdm on stderr: each falls back to :class:`EpochLines` when its
    stream is not a terminal.
    """
    if kind not in PROGRESS_BARS:
        raise ConfigError("callbacks.progress_bar", kind, f"one of {list(PROGRESS_BARS)}")
    if kind == "none":
        return None
    if kind == "rich" and _is_terminal(stdout or sys.stdout):
        return RichBar(leave=True)
    if kind == "tqdm" and _is_terminal(stderr or sys.stderr):
        return TqdmBar()
    return EpochLines()


class _DropTip(logging.Filter):
    """Drops Lightning's "Tip" advertisements (e.g. for its litlogger cloud logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith("💡 Tip")


_DROP_TIP = _DropTip()


def quiet_lightning(devices: Any = 1, num_nodes: Any = 1) -> None:
    """Keep Lightning's noise out of a run's output (see the module docstring); idempotent.

    ``devices`` and ``num_nodes`` are the Trainer's: the ``srun`` warning is silenced only
    for one process (one device on one node), where it does not apply.
    """
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _DROP_TIP not in logger.filters:
            logger.addFilter(_DROP_TIP)
    if str(devices) == "1" and str(num_nodes) == "1":
        warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")
