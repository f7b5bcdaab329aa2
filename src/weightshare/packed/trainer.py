"""``train_pack``: K jobs trained as one stacked network, each writing what its single job writes.

Why a plain PyTorch loop and not Lightning's Trainer: a Trainer owns one module, one
optimizer, one early-stopping state and one set of loggers and checkpoints; a pack needs
each of those per member (a member stops, diverges, is pruned or checkpointed on its own,
and leaves the pack while the others go on). The loop below is the single run's loop
(``weightshare.train`` + ``WeightShareModule`` + the callbacks of
``weightshare.builders.build_callbacks``) with a member dimension: the same seeding and
model construction per member, the same batches, loss, metric arithmetic (float32
accumulation like torchmetrics), Adam update, early-stopping rule and outputs. Per-member
Python runs once per epoch (rows, checkpoints, control), never per step.

Members whose train or validation sets differ in size (a fold of a data set not divisible by
the number of folds), or that resume from different epochs, cannot step in lockstep; they
are split into sub-packs trained one after the other.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from weightshare.loggers import INIT_EPOCH
from weightshare.packed.key import pack_key, unpackable_reason
from weightshare.packed.member import Member, f32
from weightshare.packed.runtime import (
    NothingToTrainError,
    TerminatedError,
    device_of,
    loss_dtype,
    lr_factors,
    sigterm_flag,
)

log = logging.getLogger("weightshare.packed")

__all__ = ["train_pack"]


def train_pack(cfgs: Sequence[DictConfig]) -> list[float | None]:
    """Train the members (equal ``pack_key``, each packable) as one stacked network.

    See :func:`weightshare.packed.train_pack` for the contract. Raises ValueError when the
    configs cannot form one pack (a launcher bug, not a member error).
    """
    from weightshare.config import validate_config
    from weightshare.job import Job
    from weightshare.train import _check_device

    cfgs = list(cfgs)
    if not cfgs:
        return []
    key = pack_key(cfgs[0])
    for i, cfg in enumerate(cfgs):
        reason = unpackable_reason(cfg)
        if reason is not None:
            raise ValueError(f"train_pack: member {i} is not packable: {reason}")
        if pack_key(cfg) != key:
            diff = [k for (k, a), (_, b) in zip(key, pack_key(cfg)) if a != b]
            raise ValueError(f"train_pack: member {i} differs from member 0 in shared settings {diff}")
    results: list[float | None] = [None] * len(cfgs)
    members: list[Member] = []
    for i, cfg in enumerate(cfgs):
        try:
            validate_config(cfg)
            _check_device(cfg)
            m = Member(cfg, i)
            done = m.prepare()
            if done is not False:
                results[i] = done  # type: ignore[assignment]
                continue
            m.load_resume()
            members.append(m)
        except Exception as exc:
            log.error("pack member %d failed at start: %s: %s", i, type(exc).__name__, exc)
            Job(cfg).record_failure(exc)
    if members:
        _run(members)
    for m in members:
        results[m.position] = m.value
    return results


def _run(members: list[Member]) -> None:
    from weightshare.data.datamodule import TensorDataModule
    from weightshare.loggers import finish_wandb

    cfg0 = members[0].cfg
    if cfg0.threads:
        torch.set_num_threads(cfg0.threads)
    torch.set_float32_matmul_precision(cfg0.float32_matmul_precision)
    if cfg0.trainer.deterministic:  # as Lightning's Trainer(deterministic=...) does
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=str(cfg0.trainer.deterministic) == "warn")
    if any("wandb" in m.cfg.logger.names for m in members):
        import wandb

        wandb.setup(wandb.Settings(reinit="create_new"))  # one W&B run per member, open together
    dataset = TensorDataModule(cfg0.data, cfg0.aug, cfg0.eval, seed=cfg0.seed).load()
    with sigterm_flag() as flag:
        try:
            groups: dict[tuple, list[Member]] = {}
            from weightshare.packed.data import PackData

            device = device_of(cfg0)
            sizes = PackData([m.cfg for m in members], dataset, torch.device("cpu"))
            for k, m in enumerate(members):
                groups.setdefault((*sizes.sizes(k), m.start_epoch), []).append(m)
            del sizes
            for group in groups.values():
                try:
                    run = _PackRun(group, dataset, device, flag)
                except NothingToTrainError:
                    continue
                run.run()
        except TerminatedError:
            for m in members:
                if m.status in ("pending", "running"):
                    m.finish("interrupted", "SIGTERMException: terminated (SIGTERM)")
            log.error("terminated (SIGTERM): resume with resume=true")
            raise SystemExit(143) from None
        except BaseException as exc:
            for m in members:
                if m.status in ("pending", "running"):
                    _fail(m, exc)
            raise
        finally:
            finish_wandb()


class _PackRun:
    """One lockstep group of members: build, train epoch by epoch, finish each member."""

    def __init__(self, members: list[Member], dataset: Any, device: torch.device, flag: dict[str, bool]) -> None:
        import pytorch_lightning as pl

        from weightshare.builders import build_model
        from weightshare.checkpoints import module_state
        from weightshare.data.datamodule import TensorDataModule
        from weightshare.models import count_parameters
        from weightshare.models.registry import is_free_model
        from weightshare.packed.adam import StackedAdam
        from weightshare.packed.data import PackData
        from weightshare.packed.stacked_net import StackedPaperNet

        self.flag = flag
        cfg = members[0].cfg
        self.cfg = cfg
        precision = str(cfg.trainer.precision)
        self.dtype = torch.float64 if precision.startswith("64") else torch.float32
        self.autocast = precision == "bf16-mixed"
        self.device = device
        info = TensorDataModule(cfg.data, cfg.aug, cfg.eval, dataset=dataset).info
        nets, started = [], []
        for m in members:
            try:
                pl.seed_everything(m.cfg.seed, workers=True, verbose=False)  # as build_run seeds
                net = build_model(m.cfg.model, info).to(self.dtype)
                if m.resume_ckpt is not None:
                    net.load_state_dict(module_state(m.resume_ckpt, "net.", m.out / "checkpoints" / "last.ckpt"))
                m.start(count_parameters(net), info.__dict__)
            except Exception as exc:  # this member only (a broken logger, a foreign checkpoint)
                log.error("%s: member failed at start: %s: %s", m.out, type(exc).__name__, exc)
                _fail(m, exc)
                continue
            nets.append(net)
            started.append(m)
        if not started:
            raise NothingToTrainError
        members = self.members = started
        self.data = PackData([m.cfg for m in members], dataset, device)
        self.net = StackedPaperNet(nets, device, self.dtype)
        oc = cfg.optimizer
        lrs = torch.tensor([m.lr for m in members], dtype=torch.float64)
        self.opt = StackedAdam(self.net.parameters(), lrs, tuple(oc.betas), oc.eps, oc.weight_decay)
        for k, m in enumerate(members):
            if m.resume_ckpt is not None:
                self.opt.load_member_state(k, m.resume_ckpt["optimizer_states"][0])
                m.resume_ckpt = None
        self.active = list(range(len(members)))  # positions in self.members of the pack's members
        self.max_epochs = int(cfg.trainer.max_epochs)
        self.min_epochs = int(cfg.trainer.min_epochs or 0)
        self.factors = lr_factors(cfg, self.max_epochs)
        self.fm = cfg.callbacks.filter_metrics
        self.free = is_free_model(str(cfg.model.name))  # filter metrics, as build_callbacks
        self.penalty = torch.tensor([m.penalty for m in members], dtype=self.dtype, device=device)
        self.use_penalty = bool((self.penalty > 0).any())
        self.radius = int(cfg.model.penalty_radius)
        self.penalty_kind = str(cfg.model.get("share_penalty_kind", "l2_neighbours"))
        self.nan_guard = bool(cfg.callbacks.nan_guard)
        self.sharing = None
        if cfg.model.dynamic_sharing.every is not None:
            from weightshare.packed.stacked_sharing import StackedDynamicSharing

            ds = cfg.model.dynamic_sharing
            strengths = [float(m.cfg.model.dynamic_sharing.strength) for m in members]
            self.sharing = StackedDynamicSharing(self.net, int(ds.every), strengths, ds.radius)
        self.start_epoch = members[0].start_epoch
        self.step = self.start_epoch * len(self.data.train_batches([0], 0)) if self.start_epoch else 0

    # ------------------------------------------------------------------ helpers
    def _autocast(self) -> Any:
        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _drop(self, positions: list[int]) -> None:
        """Remove pack positions ``positions`` (index-select parameters, Adam state, penalties)."""
        keep = [p for p in range(len(self.active)) if p not in positions]
        self.active = [self.active[p] for p in keep]
        if keep:
            self.net.select(keep)
            self.opt.select(self.net.parameters(), keep)
            self.penalty = self.penalty[torch.tensor(keep, device=self.penalty.device)]
            self.use_penalty = bool((self.penalty > 0).any())
            if self.sharing is not None:
                self.sharing.select(keep)

    def _filter_metrics(self, net: torch.nn.Module) -> dict[str, float]:
        from weightshare.metrics.filter_distance import layer_filter_metrics

        if not (self.fm.enabled and self.free):
            return {}
        return layer_filter_metrics(
            net, radii=list(self.fm.radii), layers=list(self.fm.layers) if self.fm.layers else None
        )

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        for k, m in enumerate(self.members):
            if self.start_epoch == 0:
                net = self.net.write_member(k)
                m.init_metrics = self._filter_metrics(net)
                if m.init_metrics:
                    m.log_metrics({**m.init_metrics, "epoch": float(INIT_EPOCH)}, 0)
                if self.members[k].images is not None and INIT_EPOCH in m.images.epochs:
                    m.draw_filters(net, INIT_EPOCH, 0)
        finished = [p for p, k in enumerate(self.active) if self.members[k].should_stop]
        for p in finished:  # stopped before the kill that this run resumes
            self._finish(self.active[p], "pruned" if self.members[self.active[p]].pruned else "completed", p)
        self._drop(finished)
        for epoch in range(self.start_epoch, self.max_epochs):
            if not self.active:
                break
            self._epoch(epoch)
        for p, k in enumerate(list(self.active)):
            self._finish(k, "pruned" if self.members[k].pruned else "completed", p)
        self.active = []

    def _finish(self, k: int, status: str, position: int) -> None:
        m = self.members[k]
        if status in ("completed", "pruned") and m.images is not None and m.images.last and m.last_epoch is not None:
            m.draw_filters(self.net.write_member(position), m.last_epoch, self.step)
        m.finish(status, step=self.step)

    def _epoch(self, epoch: int) -> None:
        t0 = time.perf_counter()
        members = self.active
        batches = self.data.train_batches(members, epoch)
        keys = self.data.epoch_keys(members, epoch)
        factor = self.factors[epoch]
        K = len(members)
        dev = self.device
        loss_sum = torch.zeros(K, dtype=torch.float32, device=dev)
        weight = torch.zeros(K, dtype=torch.float32, device=dev)
        correct = torch.zeros(K, dtype=torch.int64, device=dev)
        pen_sum = torch.zeros(K, dtype=torch.float64, device=dev)
        images = 0
        if self.sharing is not None:
            self.sharing.reset_epoch()
        for i in range(len(batches)):
            if self.flag["term"]:
                raise TerminatedError
            index = batches[i]
            x, y = self.data.train_batch(index, keys, self.active)
            B = index.shape[1]
            with self._autocast():
                logits = self.net.forward(x)
                ce = F.cross_entropy(loss_dtype(logits).reshape(-1, logits.shape[-1]), y, reduction="none")
            losses = ce.view(len(self.active), B).mean(1)
            if self.nan_guard:
                bad = (~torch.isfinite(losses.detach())).nonzero().flatten().tolist()
                if bad:
                    keep = self._diverge(bad, epoch, losses)
                    if not self.active:
                        return
                    sel = torch.tensor(keep, device=dev)
                    loss_sum, weight, correct, pen_sum, keys = (
                        t[sel] for t in (loss_sum, weight, correct, pen_sum, keys)
                    )
                    batches = [b[sel] for b in batches]
                    index = index[sel]
                    x, y = self.data.train_batch(index, keys, self.active)
                    with self._autocast():
                        logits = self.net.forward(x)
                        ce = F.cross_entropy(loss_dtype(logits).reshape(-1, logits.shape[-1]), y, reduction="none")
                    losses = ce.view(len(self.active), B).mean(1)
            total = losses.sum()
            if self.use_penalty:
                pen = self.net.share_penalty(self.radius, self.penalty_kind)
                total = total + (self.penalty * pen).sum()
                pen_sum += pen.detach().double() * B
            self.opt.zero_grad()
            total.backward()
            self.opt.step(factor)
            self.step += 1
            if self.sharing is not None:
                self.sharing.after_step(self.step)
            images += B
            with torch.no_grad():
                loss_sum += losses.detach().float() * float(B)
                weight += float(B)
                correct += (logits.detach().argmax(-1) == y.view(len(self.active), B)).sum(1)
        train_s = max(time.perf_counter() - t0, 1e-9)
        rows = [
            {
                "train/loss": f32(loss_sum[p] / weight[p]),
                "train/acc": f32(correct[p].float() / weight[p]),
                "lr": f32(self.members[k].lr * factor),
                "train/images_per_s": f32(images / train_s),
            }
            for p, k in enumerate(self.active)
        ]
        if self.use_penalty or any(self.members[k].penalty > 0 for k in self.active):
            for p, k in enumerate(self.active):
                if self.members[k].penalty > 0:
                    # logged as a tensor, so Lightning keeps its dtype (float64 in 64-true)
                    value = float(pen_sum[p] / float(images))
                    rows[p]["train/share_penalty"] = value if self.dtype == torch.float64 else f32(value)
        if self.sharing is not None:
            for p, row in enumerate(rows):
                row.update({n: f32(v) for n, v in self.sharing.metrics(p, self.step).items()})
        self._validate(rows)
        self._end_epoch(epoch, rows, t0)

    def _diverge(self, bad: list[int], epoch: int, losses: torch.Tensor) -> list[int]:
        for p in bad:
            k = self.active[p]
            value = float(losses[p].detach())
            msg = f"DivergenceError: training diverged: loss={value} at epoch {epoch}, step {self.step}"
            log.error("%s: %s", self.members[k].out, msg)
            self.members[k].finish("diverged", msg, step=self.step)
        keep = [p for p in range(len(self.active)) if p not in bad]
        self._drop(bad)
        return keep

    @torch.no_grad()
    def _validate(self, rows: list[dict[str, float]]) -> None:
        K = len(self.active)
        dev = self.device
        names = self.data.eval_variants.names
        loss_sum = {v: torch.zeros(K, dtype=torch.float32, device=dev) for v in names}
        correct = {v: torch.zeros(K, dtype=torch.int64, device=dev) for v in names}
        total = 0.0
        for index in self.data.eval_batches(self.active):
            if self.flag["term"]:
                raise TerminatedError
            variants, y = self.data.eval_batch(index)
            B = index.shape[1]
            yk = y.view(K, B)
            for v, x in variants.items():
                with self._autocast():
                    logits = self.net.forward(x)
                    ce = F.cross_entropy(loss_dtype(logits).reshape(-1, logits.shape[-1]), y, reduction="none")
                loss_sum[v] += ce.view(K, B).mean(1).float() * float(B)
                correct[v] += (logits.argmax(-1) == yk).sum(1)
            total += B
        for p, k in enumerate(self.active):
            m = self.members[k]
            row = rows[p]
            for v in names:
                acc = f32(correct[v][p].float() / torch.tensor(total, dtype=torch.float32))
                loss = f32(loss_sum[v][p] / torch.tensor(total, dtype=torch.float32))
                row[f"val/{v}/acc"], row[f"val/{v}/loss"] = acc, loss
                if v == "clean":
                    row["val/acc"], row["val/loss"] = acc, loss
            m.val_acc_best = max(m.val_acc_best, row["val/acc"])
            row["val/acc_best"] = f32(m.val_acc_best)

    def _end_epoch(self, epoch: int, rows: list[dict[str, float]], t0: float) -> None:
        """Each member's epoch end (metrics, images, row, control, checkpoints), then drop the finished.

        An exception in one member's part (a full disk, a broken logger) fails that member only.
        """
        every = int(self.fm.every_n_epochs)
        stop: list[int] = []
        for p, k in enumerate(self.active):
            m = self.members[k]
            try:
                net = self.net.write_member(p)
                row = rows[p]
                if (epoch + 1) % every == 0:
                    row.update({n: f32(v) for n, v in self._filter_metrics(net).items()})
                if m.images is not None and epoch in m.images.epochs:
                    m.draw_filters(net, epoch, self.step)
                row["time/epoch_s"] = f32(time.perf_counter() - t0)
                m.end_epoch(epoch, self.step, row)
                m.save_checkpoints(net, self.opt.member_state(p, self.factors[epoch]), epoch, self.step, row)
                if m.should_stop and epoch + 1 >= self.min_epochs:
                    self._finish(k, "pruned" if m.pruned else "completed", p)
                    stop.append(p)
            except Exception as exc:
                log.error("%s: member failed: %s: %s", m.out, type(exc).__name__, exc)
                _fail(m, exc)
                stop.append(p)
        self._drop(stop)


def _fail(m: Member, exc: BaseException) -> None:
    """Record ``exc`` as the member's end (``failed``, or ``interrupted`` for SystemExit/Ctrl+C)."""
    m.close_loggers(1)
    m.job.record_failure(exc)
    m.status = str(m.job.summary.get("status", "failed"))
