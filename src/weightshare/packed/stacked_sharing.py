"""Dynamic weight sharing (``model.dynamic_sharing``) on a pack's stacked weights.

The single run's :class:`~weightshare.callbacks.dynamic_sharing.DynamicSharingCallback` pulls
every free layer towards its group means after each optimiser step whose global step is a
multiple of ``every`` (:func:`weightshare.layers.dynamic_sharing.share_layer_`). Here the same
update runs on the (K, ...) stacked tensors of all members at once: the group mean of a
(K, oh, ow, ...) grid is a mean over its position dimensions (global group) or one
``avg_pool2d`` over K x entries channels (``radius``), exactly the single layer's reduction
with a leading member dimension, and ``lerp`` takes a (K,) strength, so members may differ
in ``strength`` while ``every`` and ``radius`` (the schedule and the groups) are shared (pack key).

Masks stay exact as in the single layer: the mean reads the effective kernel (removed weights
0) and only kept weights are written; a member without a mask has an all-ones mask in the
stack, for which ``where`` keeps every new value, as the single layer's unmasked path does.

Metrics are the callback's: ``train/dynamic_sharing_steps`` (``global_step // every``) and
``train/dynamic_sharing_shift`` (the mean over this epoch's sharing steps of
``||K_after - K_before|| / ||K_before||``, every free kernel of the member together).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from weightshare.packed.stacked_net import StackedPaperNet

__all__ = ["StackedDynamicSharing", "stacked_group_mean"]


def stacked_group_mean(grid: Tensor, radius: int | None) -> Tensor:
    """``group_mean`` of every member's ``grid[k]`` for ``grid`` (K, oh, ow, ...)."""
    if radius is None:
        return grid.mean(dim=(1, 2), keepdim=True).expand_as(grid)
    K, oh, ow = grid.shape[0], grid.shape[1], grid.shape[2]
    flat = grid.reshape(K, oh, ow, -1).permute(0, 3, 1, 2)  # (K, D, oh, ow)
    pooled = F.avg_pool2d(flat, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    return pooled.permute(0, 2, 3, 1).reshape(grid.shape)


def _pull(grid: Tensor, strength: Tensor, radius: int | None) -> Tensor:
    a = strength.to(grid.dtype).view((-1,) + (1,) * (grid.dim() - 1))
    return torch.lerp(grid, stacked_group_mean(grid, radius), a)


class StackedDynamicSharing:
    """The sharing phase of every member of a :class:`StackedPaperNet`, with the callback's metrics."""

    def __init__(self, net: StackedPaperNet, every: int, strengths: list[float], radius: int | None) -> None:
        if net.kind not in ("fcn", "lowrank"):
            raise ValueError(f"dynamic sharing packs free or low-rank networks, not {net.kind!r}")
        for layer in net.layers:
            if layer.kind not in ("free", "lowrank"):
                raise ValueError(f"dynamic sharing cannot pull layer {layer.name} ({layer.kind})")
        self.net = net
        self.every = int(every)
        self.radius = None if radius is None else int(radius)
        dev = next(iter(net.params.values())).device
        self.strength = torch.tensor(strengths, dtype=torch.float64, device=dev)
        self.reset_epoch()

    def reset_epoch(self) -> None:
        self.shift_sum = torch.zeros(self.net.size, dtype=torch.float64, device=self.strength.device)
        self.shift_count = 0

    def select(self, keep: list[int]) -> None:
        """Follow :meth:`StackedPaperNet.select` (members at positions ``keep``)."""
        idx = torch.tensor(keep, dtype=torch.long, device=self.strength.device)
        self.strength = self.strength.index_select(0, idx)
        self.shift_sum = self.shift_sum.index_select(0, idx)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """The callback's ``on_train_batch_end``: share when ``step`` (the new global step) is due."""
        if step == 0 or step % self.every != 0:
            return
        before = [k.clone() for k in self.net.filter_kernels()]  # a kernel may be the parameter itself
        for layer in self.net.layers:
            if layer.kind == "free":
                self._share_free(layer.name)
            else:
                self._share_lowrank(layer.name)
        after = self.net.filter_kernels()
        diff = sum(((a - b) ** 2).flatten(1).sum(1) for a, b in zip(after, before))
        norm = sum((b**2).flatten(1).sum(1) for b in before).sqrt()
        shift = torch.where(norm > 0, diff.sqrt() / norm, torch.zeros_like(norm))
        self.shift_sum += shift.double()
        self.shift_count += 1

    def _share_free(self, name: str) -> None:
        p = self.net.params
        w = p[f"{name}.weight"]  # (K, oh, ow, kh, kw, C, O)
        keep = self.net.keep_mask(name)
        effective = w if keep is None else w * keep
        new = _pull(effective, self.strength, self.radius)
        w.copy_(new if keep is None else torch.where(keep, new, w))
        bias = p.get(f"{name}.bias")
        if bias is not None:
            bias.copy_(_pull(bias, self.strength, self.radius))

    def _share_lowrank(self, name: str) -> None:
        layer = self.net.layer(name)
        mod = layer.module
        if mod.combining != "full" or mod.normalize == "norm":  # as share_layer_ rejects it
            raise TypeError(f"dynamic sharing of {name} needs combining='full' and normalize 'softmax' or 'none'")
        p = self.net.params
        logits = p[f"{name}.combining_logits"]  # (K, oh, ow, R)
        weights = _pull(self.net.combining_weights(layer), self.strength, self.radius)
        logits.copy_(weights.log() if mod.normalize == "softmax" else weights)
        spatial = p.get(f"{name}.bias_spatial")
        if spatial is not None:
            spatial.copy_(_pull(spatial, self.strength, self.radius))

    def metrics(self, position: int, step: int) -> dict[str, float]:
        """Member ``position``'s logged values at the epoch's end (the callback's two columns)."""
        row = {"train/dynamic_sharing_steps": float(step // self.every)}
        if self.shift_count:
            row["train/dynamic_sharing_shift"] = float(self.shift_sum[position]) / self.shift_count
        return row
