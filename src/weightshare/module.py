"""The LightningModule: loss, optimiser, and accuracy on every evaluation variant.

The network itself is built by :func:`weightshare.builders.build_model`; this module adds
cross-entropy, the optional soft-sharing penalty, torchmetrics accuracies (train, and one
per evaluation variant), the best validation accuracy so far, and a guard that turns a
non-finite loss into :class:`DivergenceError` naming the epoch and step.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from weightshare.builders import build_model, build_optimizer, build_scheduler
from weightshare.data.dataset import DataInfo
from weightshare.errors import DivergenceError
from weightshare.models import count_parameters

__all__ = ["DivergenceError", "WeightShareModule"]


def _loss_dtype(logits: torch.Tensor) -> torch.Tensor:
    """Logits for the loss: at least float32 (bf16/fp16 upcast), float64 kept as is."""
    return logits if logits.dtype == torch.float64 else logits.float()


class WeightShareModule(pl.LightningModule):
    """Classifier around ``self.net`` (a paper network or a ResNet)."""

    def __init__(
        self,
        model: DictConfig,
        optimizer: DictConfig,
        scheduler: DictConfig,
        data_info: DataInfo,
        variants: list[str],
        max_epochs: int = 1,
        net: nn.Module | None = None,
        nan_guard: bool = True,
    ) -> None:
        super().__init__()
        self.model_cfg = model
        self.optim_cfg = optimizer
        self.sched_cfg = scheduler
        self.max_epochs_for_schedule = max_epochs
        # "clean" is always scored: it is val/acc, what early stopping and val/acc_best follow
        self.variants = list(dict.fromkeys(["clean", *variants]))
        self.net = net if net is not None else build_model(model, data_info)
        self.param_count = count_parameters(self.net)
        if model.compile:
            self.net.compile()  # in place: parameter names (and checkpoints) stay the same
        n = data_info.num_classes
        self.train_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.train_loss = MeanMetric()
        self.eval_acc = nn.ModuleDict({v: MulticlassAccuracy(num_classes=n, average="micro") for v in self.variants})
        self.eval_loss = nn.ModuleDict({v: MeanMetric() for v in self.variants})
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # saved in checkpoints, so a resumed run keeps it
        self.penalty_weight = float(model.share_penalty)
        self.nan_guard = nan_guard

    # ----------------------------------------------------------------- train
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def share_penalty(self) -> torch.Tensor:
        from weightshare.layers.share_penalty import model_share_penalty

        return model_share_penalty(self.net, radius=self.model_cfg.penalty_radius)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(_loss_dtype(logits), y)
        if self.nan_guard and not torch.isfinite(loss):
            raise DivergenceError(self.current_epoch, self.global_step, float(loss.detach()))
        self.train_loss(loss.detach(), weight=y.numel())
        self.train_acc(logits.detach(), y)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        if self.penalty_weight > 0:
            penalty = self.share_penalty()
            self.log("train/share_penalty", penalty.detach(), on_step=False, on_epoch=True)
            loss = loss + self.penalty_weight * penalty
        return loss

    # ------------------------------------------------------------ evaluation
    def _evaluate(self, batch: dict[str, Any], prefix: str) -> None:
        y = batch["y"]
        for variant, x in batch["x"].items():
            logits = self.net(x)
            loss = F.cross_entropy(_loss_dtype(logits), y)
            self.eval_loss[variant](loss, weight=y.numel())
            self.eval_acc[variant](logits, y)
            self.log(f"{prefix}/{variant}/acc", self.eval_acc[variant], on_step=False, on_epoch=True)
            self.log(f"{prefix}/{variant}/loss", self.eval_loss[variant], on_step=False, on_epoch=True)
            if variant == "clean":
                self.log(f"{prefix}/acc", self.eval_acc[variant], on_step=False, on_epoch=True, prog_bar=True)
                self.log(f"{prefix}/loss", self.eval_loss[variant], on_step=False, on_epoch=True, prog_bar=True)

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
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        opt = build_optimizer(params, self.optim_cfg)
        sched = build_scheduler(opt, self.sched_cfg, self.max_epochs_for_schedule)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
