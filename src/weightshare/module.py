"""The LightningModule: loss, optimiser, and accuracy on every evaluation variant.

The module is handed everything it is made of (lightning-hydra-template's ``_partial_``
pattern): the network, an optimizer factory (``params -> Optimizer``), a scheduler factory
(``optimizer -> scheduler or None``) and the share penalty (``net -> Tensor``), all built by
:func:`weightshare.builders.build_module`. So construction has one owner and this module
never imports the builders. It adds cross-entropy, the optional soft-sharing penalty,
torchmetrics accuracies (train, and one per evaluation variant), the best validation
accuracy so far, and a guard that turns a non-finite loss into :class:`DivergenceError`
naming the epoch and step.

The step is split in three (:meth:`loss_of`, :meth:`check_finite`, :meth:`log_train`) so a
pack (:mod:`weightshare.packed`) runs each member's part of it with this very code, and
:attr:`log_prefix` names a pack member's metrics apart from the others'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from weightshare.errors import DivergenceError
from weightshare.models import count_parameters

__all__ = ["DivergenceError", "OptimizerFactory", "SchedulerFactory", "WeightShareModule"]

#: ``params -> optimizer`` (``params``: tensors or param-group dicts, as torch.optim takes)
OptimizerFactory = Callable[[Any], torch.optim.Optimizer]
#: ``optimizer -> per-epoch scheduler`` or None
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def _loss_dtype(logits: torch.Tensor) -> torch.Tensor:
    """Logits for the loss: at least float32 (bf16/fp16 upcast), float64 kept as is."""
    return logits if logits.dtype == torch.float64 else logits.float()


class WeightShareModule(pl.LightningModule):
    """Classifier around ``self.net`` (a paper network or a ResNet)."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory,
        *,
        num_classes: int,
        variants: list[str],
        share_penalty: Callable[[nn.Module], torch.Tensor] | None = None,
        penalty_weight: float = 0.0,
        nan_guard: bool = True,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # "clean" is always scored: it is val/acc, what early stopping and val/acc_best follow
        self.variants = list(dict.fromkeys(["clean", *variants]))
        self.net = net
        self.param_count = count_parameters(self.net)
        if compile:
            self.net.compile()  # in place: parameter names (and checkpoints) stay the same
        n = num_classes
        self.train_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.train_loss = MeanMetric()
        self.eval_acc = nn.ModuleDict({v: MulticlassAccuracy(num_classes=n, average="micro") for v in self.variants})
        self.eval_loss = nn.ModuleDict({v: MeanMetric() for v in self.variants})
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # saved in checkpoints, so a resumed run keeps it
        self.penalty_fn = share_penalty
        self.penalty_weight = float(penalty_weight)
        self.nan_guard = nan_guard
        #: prepended to every logged name (a pack member's ``"m3/"``); "" in a single run
        self.log_prefix = ""

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """``LightningModule.log``, under :attr:`log_prefix` (a pack member's metrics stay off the bar)."""
        if self.log_prefix:
            name, kwargs["prog_bar"] = self.log_prefix + name, False
        super().log(name, value, *args, **kwargs)

    # ----------------------------------------------------------------- train
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def share_penalty(self) -> torch.Tensor:
        if self.penalty_fn is None:
            return torch.zeros((), device=next(self.net.parameters()).device)
        return self.penalty_fn(self.net)

    def loss_of(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(_loss_dtype(logits), y)

    def check_finite(self, loss: torch.Tensor) -> None:
        """Raise :class:`DivergenceError` for a non-finite loss (with ``nan_guard``)."""
        if self.nan_guard and not torch.isfinite(loss):
            raise DivergenceError(self.current_epoch, self.global_step, float(loss.detach()))

    def log_train(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Update and log the training metrics; the loss to minimise (with the share penalty)."""
        self.train_loss(loss.detach(), weight=y.numel())
        self.train_acc(logits.detach(), y)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        if self.penalty_weight > 0:
            penalty = self.share_penalty()
            self.log("train/share_penalty", penalty.detach(), on_step=False, on_epoch=True)
            loss = loss + self.penalty_weight * penalty
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = self.loss_of(logits, y)
        self.check_finite(loss)
        return self.log_train(loss, logits, y)

    # ------------------------------------------------------------ evaluation
    def score(self, logits: torch.Tensor, y: torch.Tensor, variant: str, prefix: str) -> None:
        """Update and log one evaluation variant's loss and accuracy."""
        loss = F.cross_entropy(_loss_dtype(logits), y)
        self.eval_loss[variant](loss, weight=y.numel())
        self.eval_acc[variant](logits, y)
        self.log(f"{prefix}/{variant}/acc", self.eval_acc[variant], on_step=False, on_epoch=True)
        self.log(f"{prefix}/{variant}/loss", self.eval_loss[variant], on_step=False, on_epoch=True)
        if variant == "clean":
            self.log(f"{prefix}/acc", self.eval_acc[variant], on_step=False, on_epoch=True, prog_bar=True)
            self.log(f"{prefix}/loss", self.eval_loss[variant], on_step=False, on_epoch=True, prog_bar=True)

    def _evaluate(self, batch: dict[str, Any], prefix: str) -> None:
        for variant, x in batch["x"].items():
            self.score(self.net(x), batch["y"], variant, prefix)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        acc = self.eval_acc["clean"].compute() if "clean" in self.eval_acc else None
        if acc is not None:
            self.val_acc_best(acc)
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_train_start(self) -> None:
        # a resumed run restores val_acc_best from the checkpoint (metric states are saved);
        # a fresh one starts from nothing even if sanity validation ran
        if self.trainer.current_epoch == 0:
            self.val_acc_best.reset()

    # ------------------------------------------------------------- optimiser
    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        opt = self.optimizer_factory(self.trainable())
        sched = self.scheduler_factory(opt)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
