"""Lightning callback logging the filter distances of the free layers during training.

The values at the start of training (``init_metrics``) and after every ``every_n_epochs``-th
training epoch answer "does approximate weight sharing emerge?" (the paper's Figure 5).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytorch_lightning as pl
from torch import nn

from weightshare.errors import ConfigError
from weightshare.layers.common import check_radii
from weightshare.loggers import INIT_EPOCH
from weightshare.metrics.filter_distance import layer_filter_metrics

__all__ = ["FilterDistanceCallback", "network_of"]


def network_of(pl_module: pl.LightningModule) -> nn.Module:
    """The network whose layers are measured or drawn: ``pl_module.net`` (the project's convention).

    Falls back to the LightningModule itself so the filter callbacks also work on a module
    that holds its layers directly.
    """
    net = getattr(pl_module, "net", None)
    return net if isinstance(net, nn.Module) else pl_module


class FilterDistanceCallback(pl.Callback):
    """Compute :func:`~weightshare.metrics.layer_filter_metrics` at fit start and every n epochs.

    - ``on_fit_start``: the values of the initial weights are stored in ``self.init_metrics``
      (for ``results.json["init"]``) and sent to every trainer logger with ``step=0`` and
      ``epoch`` = :data:`~weightshare.loggers.INIT_EPOCH` (the ``init`` point of the epoch axis). When the
      fit resumes from a checkpoint the weights are no longer the initial ones, so nothing is
      recomputed: ``init_metrics`` comes back from the checkpoint (this callback's state).
    - ``on_train_epoch_end`` of every ``every_n_epochs``-th epoch (counting from 1): each value
      is logged with ``pl_module.log(name, value, on_epoch=True)``, so it lands in
      ``trainer.callback_metrics`` (read by the epoch CSV writer) and in the loggers.

    A network without free layers (a CNN) gives no metrics and the callback does nothing.
    """

    def __init__(
        self, radii: Sequence[int] = (1, 4), layers: Iterable[str] | None = None, every_n_epochs: int = 1
    ) -> None:
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ConfigError("callbacks.filter_metrics.every_n_epochs", every_n_epochs, "an integer >= 1")
        self.radii = check_radii(radii, "callbacks.filter_metrics.radii")
        self.layers = None if layers is None else list(layers)
        self.every_n_epochs = every_n_epochs
        self.init_metrics: dict[str, float] = {}

    def compute(self, pl_module: pl.LightningModule) -> dict[str, float]:
        """The current filter distances of ``pl_module``'s network (empty for a CNN)."""
        return layer_filter_metrics(network_of(pl_module), radii=self.radii, layers=self.layers)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is not None:
            return  # resumed: the weights are not the initial ones; init_metrics was restored
        self.init_metrics = self.compute(pl_module)
        if not self.init_metrics:
            return
        for logger in trainer.loggers:
            logger.log_metrics({**self.init_metrics, "epoch": float(INIT_EPOCH)}, step=0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        metrics = self.compute(pl_module)
        to_loggers = bool(trainer.loggers)  # logger=True without loggers only earns a warning
        for name, value in metrics.items():
            pl_module.log(name, value, on_step=False, on_epoch=True, prog_bar=False, logger=to_loggers)

    def state_dict(self) -> dict[str, Any]:
        return {"init_metrics": dict(self.init_metrics)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.init_metrics = dict(state_dict.get("init_metrics", {}))
