"""Report the monitored metric to the job's Optuna trial each epoch; stop when it is pruned.

Used inside each training job of ``hydra/sweeper=optuna``. The sweeper passes the trial's
identity in the ``trial`` config node; this callback reloads the study from that storage
(so pruning works across processes and hosts), reports ``trainer.callback_metrics[monitor]``
after every validation run, and asks the study's pruner. When pruned it sets
``trainer.should_stop`` and ``self.pruned``; the job then finishes normally, returns its
objective and writes status ``pruned``; the trial itself carries ``pruned=True`` so the
sweeper tells Optuna PRUNED. Outside an Optuna sweep (``trial.storage`` null) it does nothing.

Optuna's own ``PyTorchLightningPruningCallback`` lives in the separate optuna-integration
package and takes a live ``Trial`` object, which a Hydra job launched in another process
does not have; the protocol here goes through the storage instead
(:mod:`weightshare.trial_protocol`).
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl

from weightshare.trial_protocol import TrialLink, report_and_maybe_prune

__all__ = ["OptunaPruningCallback", "report_and_maybe_prune"]

log = logging.getLogger(__name__)


class OptunaPruningCallback(pl.Callback):
    """Per-epoch reporting and pruning for the job's trial.

    Args:
        trial_cfg: the job config's ``trial`` node (``TrialConfig``).
        monitor: metric to report; default ``trial_cfg.monitor`` (the sweep's objective).
    """

    def __init__(self, trial_cfg: Any, monitor: str | None = None) -> None:
        super().__init__()
        self.link = TrialLink.from_config(trial_cfg)
        self.monitor = monitor or (self.link.monitor if self.link else None)
        self.pruned = False
        self.pruned_epoch: int | None = None
        if self.link is not None and self.monitor is None:
            log.warning("trial %d: no metric to monitor, pruning is off", self.link.trial_number)
            self.link = None

    @property
    def active(self) -> bool:
        """True inside an Optuna sweep (the job has a trial to report to)."""
        return self.link is not None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: the module's epoch-end logging
        # (e.g. val/acc_best) has reached callback_metrics by then.
        if self.link is None or trainer.sanity_checking or self.pruned:
            return
        epoch = int(trainer.current_epoch)
        prune = False
        if trainer.is_global_zero:
            assert self.monitor is not None
            value = trainer.callback_metrics.get(self.monitor)
            prune = report_and_maybe_prune(self.link, epoch, value)
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            trainer.should_stop = True
            self.pruned = True
            self.pruned_epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {"pruned": self.pruned, "pruned_epoch": self.pruned_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruned = bool(state_dict.get("pruned", False))
        self.pruned_epoch = state_dict.get("pruned_epoch")
