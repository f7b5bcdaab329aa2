"""The pack: K single-run modules trained as one network with ``torch.func``.

Why this design: a pack used to be a second copy of the training path (a stacked twin of
every layer and network, its own Adam and loop), so every change had to be made twice and
whatever had no twin could not pack. Here each member is the single run's own
:class:`~weightshare.module.WeightShareModule`, its network built by the same builder with
the same seed; the pack stacks the members' parameters and buffers and runs one copy of the
network's code over all of them with ``torch.func.vmap`` + ``functional_call``. Every layer
has exactly one implementation: the ones whose op batches badly own a batching rule beside
themselves (:mod:`weightshare.layers.free_conv_batched`), everything else batches natively.

The members' parameters stay the leaves: each step stacks them (the stack is in the autograd
graph), so gradients, the share penalty (computed on each member's network by the member's
own code), dynamic sharing and checkpoints all act on the member exactly as in its single
run. One optimizer holds one parameter group per member with that member's own
hyperparameters (its learning rate...), so the update is the single run's, member by member;
a member that left the pack is not stacked, gets no gradient, and the optimizer skips it:
its weights never change again. BatchNorm statistics are stacked too and written back.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.func import functional_call, vmap

from weightshare.errors import DivergenceError
from weightshare.module import WeightShareModule

__all__ = ["PackModule", "member_state", "merge_states"]

#: buffers a member may lack where another has them; such a member computes with ones there
#: (a mask of ones is no mask, exactly: ``w * 1 == w``); ``reference_kernel`` is not used in forward
_FILLABLE = ("mask", "input_mask", "reference_kernel")


def _buffer(net: nn.Module, name: str) -> torch.Tensor | None:
    mod, _, attr = name.rpartition(".")
    return getattr(net.get_submodule(mod), attr, None)


class PackModule(pl.LightningModule):
    """``members`` (single-run modules of one architecture) as one LightningModule.

    Batches are ``(x, y, ids)``: ``x`` (M, B, ...) and ``y`` (M, B) hold the batches of the
    members ``ids`` (:class:`~weightshare.packed.data.PackData`). Member ``k`` logs under
    ``m{k}/``; :attr:`on_leave` is told of a member that diverged (it then leaves the pack).
    """

    def __init__(self, members: Sequence[WeightShareModule]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        for k, m in enumerate(members):
            m.log_prefix = f"m{k}/"
        self.active: list[int] = list(range(len(members)))
        self.on_leave: Callable[[int, BaseException], None] = lambda k, exc: None
        nets = [m.net for m in members]
        self._params = [n for n, _ in nets[0].named_parameters()]
        templates: dict[str, torch.Tensor] = {}
        for k, net in enumerate(nets):
            if [n for n, _ in net.named_parameters()] != self._params:
                raise ValueError(f"pack member {k} has other parameters than member 0: not one architecture")
            for name, buf in net.named_buffers():
                templates.setdefault(name, buf)
        for k, net in enumerate(nets):
            missing = [n for n in templates if _buffer(net, n) is None and not n.endswith(_FILLABLE)]
            if missing:
                raise ValueError(f"pack member {k} lacks the buffers {missing} that another member has")
        # stack_module_state would take the buffer names of member 0 alone (a pack of an
        # unmasked and a masked network would then run without the mask): take their union
        self._shapes = {n: (tuple(t.shape), t.dtype) for n, t in templates.items()}
        base = copy.deepcopy(nets[0]).to("meta")
        for name, (shape, dtype) in self._shapes.items():
            mod, _, attr = name.rpartition(".")
            base.get_submodule(mod).register_buffer(attr, torch.empty(shape, dtype=dtype, device="meta"))
        object.__setattr__(self, "_base", base)  # not a submodule: it holds no state
        norm = (nn.modules.batchnorm._NormBase,)
        self._stats = [
            f"{mod}.{n}".lstrip(".")
            for mod, sub in nets[0].named_modules()
            if isinstance(sub, norm)
            for n, b in sub.named_buffers(recurse=False)
        ]
        self._images = 0
        self._t0 = time.perf_counter()

    def setup(self, stage: str) -> None:
        for m in self.members:  # Lightning attaches the Trainer to this module, not to its members
            m.trainer = self.trainer

    # ------------------------------------------------------------------ forward
    def _state(self, ids: Sequence[int]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        nets = [self.members[k].net for k in ids]
        params = {n: torch.stack([net.get_parameter(n) for net in nets]) for n in self._params}
        buffers = {}
        for name, (shape, dtype) in self._shapes.items():
            ts = [_buffer(net, name) for net in nets]
            if any(t is None for t in ts):  # a member without this mask computes with ones
                ones = torch.ones(shape, dtype=dtype, device=next(iter(params.values())).device)
                ts = [ones if t is None else t for t in ts]
            buffers[name] = torch.stack(ts)  # type: ignore[arg-type]
        return params, buffers

    def forward_members(self, x: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
        """Logits (M, B, classes) of members ``ids`` on their batches ``x`` (M, B, ...)."""
        params, buffers = self._state(ids)
        base: nn.Module = self._base  # type: ignore[assignment]
        base.train(self.training)
        logits = vmap(lambda p, b, xi: functional_call(base, (p, b), (xi,)))(params, buffers, x)
        if self.training and self._stats:
            with torch.no_grad():  # BatchNorm's running statistics, updated in the stacked copy
                for i, k in enumerate(ids):
                    for name in self._stats:
                        _buffer(self.members[k].net, name).copy_(buffers[name][i])  # type: ignore[union-attr]
        return logits

    def _with_fx(self, ids: Sequence[int]) -> list[WeightShareModule]:
        """The member modules ``ids``, told which hook is running (``self.log`` needs it)."""
        mods = [self.members[k] for k in ids]
        for m in mods:
            m._current_fx_name = self._current_fx_name
        return mods  # type: ignore[return-value]

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, list[int]], batch_idx: int) -> Any:
        x, y, ids = batch
        pos = [i for i, k in enumerate(ids) if k in self.active]  # a member may have left mid-epoch
        while pos:
            x, y, ids = x[pos], y[pos], [ids[i] for i in pos]
            logits = self.forward_members(x, ids)
            mods = self._with_fx(ids)
            losses = [m.loss_of(logits[i], y[i]) for i, m in enumerate(mods)]
            pos = list(range(len(ids)))
            for i, m in enumerate(mods):
                try:
                    m.check_finite(losses[i])
                except DivergenceError as exc:
                    pos.remove(i)
                    self.leave(ids[i], exc)
            if len(pos) == len(ids):
                self._images += y.numel()
                self.log("pack/members", float(len(self.active)), prog_bar=True, on_step=True, on_epoch=False)
                rate = self._images / max(time.perf_counter() - self._t0, 1e-9)
                self.log("pack/member_img_s", rate, prog_bar=True, on_step=True, on_epoch=False)
                return sum(m.log_train(losses[i], logits[i], y[i]) for i, m in enumerate(mods))
        return None  # every member of this batch diverged: Lightning skips the step

    def leave(self, k: int, exc: BaseException | None = None) -> None:
        """Member ``k`` leaves the pack: no compute, no gradient, no update from now on."""
        if k in self.active:
            self.active.remove(k)
            if exc is not None:
                self.on_leave(k, exc)

    def _evaluate(self, batch: dict[str, Any], prefix: str) -> None:
        ids = batch["ids"]
        mods = self._with_fx(ids)
        for variant, x in batch["x"].items():
            logits = self.forward_members(x, ids)
            for i, m in enumerate(mods):
                m.score(logits[i], batch["y"][i], variant, prefix)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        for m in self._with_fx(self.active):
            m.on_validation_epoch_end()

    def on_train_start(self) -> None:
        for m in self._with_fx(self.active):
            m.on_train_start()

    def on_train_epoch_start(self) -> None:
        self._images, self._t0 = 0, time.perf_counter()

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> Any:
        """One group per member, with the hyperparameters its own optimizer factory gives it."""
        groups = [m.optimizer_factory(m.trainable()).param_groups[0] for m in self.members]  # type: ignore[operator]
        opt = self.members[0].optimizer_factory(groups)  # type: ignore[operator]
        sched = self.members[0].scheduler_factory(opt)  # type: ignore[operator]
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def member_checkpoint(self, k: int, callbacks: dict[str, Any], weights_only: bool) -> dict[str, Any]:
        """Member ``k``'s checkpoint, in the single run's format (it resumes as a single run)."""
        trainer = self.trainer
        ckpt: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "pytorch-lightning_version": pl.__version__,
            "state_dict": self.members[k].state_dict(),
            "loops": {
                name: getattr(trainer, name).state_dict()
                for name in ("fit_loop", "validate_loop", "test_loop", "predict_loop")
            },
        }
        if not weights_only:
            n = len(self.members)
            ckpt["callbacks"] = callbacks
            ckpt["optimizer_states"] = [member_state(trainer.strategy.optimizer_state(trainer.optimizers[0]), k, n)]
            ckpt["lr_schedulers"] = [member_state(c.scheduler.state_dict(), k, n) for c in trainer.lr_scheduler_configs]
            prec = trainer.precision_plugin
            if prec.state_dict():
                ckpt[type(prec).__qualname__] = prec.state_dict()
        return ckpt


def member_state(state: dict[str, Any], k: int, n: int) -> dict[str, Any]:
    """Member ``k``'s part of a pack optimizer's or scheduler's ``state_dict`` (``n`` groups).

    An optimizer's groups are renumbered as a one-group optimizer numbers them; a scheduler's
    per-group lists (``base_lrs``, ``_last_lr``, ...) are cut to member ``k``'s entry.
    """
    if "param_groups" in state:
        group = state["param_groups"][k]
        ids = group["params"]
        return {
            "state": {j: state["state"][i] for j, i in enumerate(ids) if i in state["state"]},
            "param_groups": [{**group, "params": list(range(len(ids)))}],
        }
    return {key: [v[k]] if isinstance(v, list) and len(v) == n else v for key, v in state.items()}


def merge_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The pack's ``state_dict`` from its members' (the inverse of :func:`member_state`)."""
    if "param_groups" in states[0]:
        merged: dict[str, Any] = {"state": {}, "param_groups": []}
        offset = 0
        for s in states:
            (group,) = s["param_groups"]
            merged["state"].update({i + offset: v for i, v in s["state"].items()})
            merged["param_groups"].append({**group, "params": [i + offset for i in group["params"]]})
            offset += len(group["params"])
        return merged
    first = states[0]
    return {
        key: [x for s in states for x in s[key]] if isinstance(v, list) and len(v) == 1 else v
        for key, v in first.items()
    }
