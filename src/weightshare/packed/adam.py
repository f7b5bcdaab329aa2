"""Per-member Adam on stacked parameters: each member's own learning rate and step count.

``torch.optim.Adam`` has one learning rate per parameter group and would need K groups of
views, i.e. a Python loop over members in every step; Adam is elementwise, so the same
update with a (K,) learning-rate tensor broadcast over each stacked parameter is exact and
costs one pass over each tensor for the whole pack. The update is
``torch.optim.Adam``'s (coupled weight decay, bias corrections ``1 - beta**t``,
``denom = sqrt(v) / sqrt(1 - beta2**t) + eps``), which its fused and for-each kernels
compute up to rounding (checked in float64 by ``tests/test_packed_adam.py``).

State per parameter: ``exp_avg`` and ``exp_avg_sq`` (K, ...) and ``step`` (K,), saved per
member in the layout of ``torch.optim.Adam``'s state dict, so a member's checkpoint holds
an ordinary optimizer state. Dropping members is an index-select of every tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["StackedAdam"]


class StackedAdam:
    """Adam over stacked leaf tensors (K, ...) with a per-member learning rate (K,)."""

    def __init__(
        self,
        params: list[Tensor],
        lr: Tensor,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = list(params)
        K = self.params[0].shape[0]
        if lr.shape != (K,):
            raise ValueError(f"lr must have shape ({K},), got {tuple(lr.shape)}")
        if lr.dtype != torch.float64:  # a float32 rate is already rounded (1e-3 -> 1.0000000475e-3)
            raise TypeError(f"lr must be a float64 tensor (the config's rates exactly), got {lr.dtype}")
        dev = self.params[0].device  # the rates and step counts live beside the parameters (CUDA too)
        self.lr = lr.to(dev)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.step_count = torch.zeros(K, dtype=torch.float64, device=dev)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr_factor: float = 1.0) -> None:
        """One Adam step for every member; ``lr_factor``: the scheduler's factor this epoch."""
        b1, b2 = self.betas
        self.step_count += 1
        t = self.step_count
        bc1 = 1.0 - b1**t
        bc2_sqrt = torch.sqrt(1.0 - b2**t)
        step_size = self.lr * lr_factor / bc1
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            g = p.grad
            if g is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            if self.weight_decay != 0:
                g = g.add(p, alpha=self.weight_decay)
            m.lerp_(g, 1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (v.sqrt() / bc2_sqrt.to(p.dtype).view(shape)).add_(self.eps)
            p.addcdiv_(m * step_size.to(p.dtype).view(shape), denom, value=-1.0)

    def select(self, params: list[Tensor], keep: list[int]) -> None:
        """Follow :meth:`StackedPaperNet.select`: new parameter leaves, members ``keep`` of the state."""
        idx = torch.tensor(keep, dtype=torch.long, device=params[0].device)
        self.params = list(params)
        self.exp_avg = [m.index_select(0, idx) for m in self.exp_avg]
        self.exp_avg_sq = [v.index_select(0, idx) for v in self.exp_avg_sq]
        self.lr = self.lr.index_select(0, idx)
        self.step_count = self.step_count.index_select(0, idx)

    def member_state(self, k: int, lr_factor: float = 1.0) -> dict[str, Any]:
        """Member ``k``'s state in ``torch.optim.Adam.state_dict()`` layout (one param group)."""
        state = {
            i: {
                "step": torch.tensor(float(self.step_count[k])),
                "exp_avg": m[k].detach().cpu().clone(),
                "exp_avg_sq": v[k].detach().cpu().clone(),
            }
            for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq))
        }
        group = {
            "lr": float(self.lr[k]) * lr_factor,
            "initial_lr": float(self.lr[k]),
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "amsgrad": False,
            "maximize": False,
            "foreach": None,
            "capturable": False,
            "differentiable": False,
            "fused": True,
            "decoupled_weight_decay": False,
            "params": list(range(len(self.exp_avg))),
        }
        return {"state": state, "param_groups": [group]}

    @torch.no_grad()
    def load_member_state(self, k: int, state: dict[str, Any]) -> None:
        """Set member ``k`` from a ``torch.optim.Adam`` state dict (same parameter order)."""
        for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq)):
            s = state["state"].get(i) if isinstance(state["state"], dict) else None
            if s is None:
                s = state["state"].get(str(i))
            if s is None:
                continue
            m[k].copy_(s["exp_avg"].to(device=m.device, dtype=m.dtype))
            v[k].copy_(s["exp_avg_sq"].to(device=v.device, dtype=v.dtype))
            self.step_count[k] = float(s["step"])
