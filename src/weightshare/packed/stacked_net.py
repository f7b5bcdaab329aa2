"""K paper networks (CNN, FCN, VCP-masked FCN, tiled FCN) as one stacked network.

Each member's :class:`~weightshare.models.paper_nets.PaperNet` is built exactly as its single
run builds it (same seeding), and its parameters are stacked along a leading member
dimension K into leaf tensors; one forward/backward then runs every member:

- ``nn.Conv2d`` layers (CNN): one grouped convolution with ``groups=K`` on activations laid
  out (B, K*C, H, W), so consecutive conv layers need no reshuffle;
- ``FreeConv2d`` / ``TiledConv2d`` layers (FCN): :func:`.stacked_free_conv.stacked_free_conv`,
  one batched matmul over members x positions (a tiled layer gathers its tiles to positions
  first, like the single layer); VCP masks are stacked too (weight mode: the kernel is
  multiplied by the mask; input mode: the input is), with all-ones masks for members
  without one, which multiply exactly;
- ``nn.Linear``: ``baddbmm`` over members.

Why batched kernels rather than ``torch.func.vmap(functional_call(net))``: vmap would run
the free layer through its ``unfold`` fallback (see :mod:`.stacked_free_conv`) and leaves
the member dimension where the layer's batching rules put it; the explicit kernels keep the
single run's fast paths and layouts, and are one kernel per layer for the whole pack on a
GPU. ``vmap`` is used only for the share penalty, whose per-member code is reused as is.

The member nets stay as ordinary modules (``members``); :meth:`StackedPaperNet.write_member`
copies a member's slice back into its module, so filter metrics, images and checkpoints
use the project's own code and key names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightshare.layers.free_conv import FreeConv2d
from weightshare.layers.share_penalty import neighbour_penalty
from weightshare.layers.tiled_conv import TiledConv2d
from weightshare.models.paper_nets import PaperNet
from weightshare.packed.stacked_free_conv import stacked_free_conv

__all__ = ["StackedPaperNet"]


@dataclass
class _Layer:
    name: str
    kind: str  # "conv", "free", "tiled"
    module: nn.Module  # member 0's layer (geometry, stride)
    rows: Tensor | None = None  # tiled layers: position -> tile row / column, on the pack's device
    cols: Tensor | None = None


class StackedPaperNet:
    """Stacked parameters (``params``, name -> (K, ...)) and masks of K ``PaperNet`` members."""

    def __init__(self, members: list[PaperNet], device: torch.device | str, dtype: torch.dtype) -> None:
        if not members:
            raise ValueError("StackedPaperNet needs at least one member")
        first = members[0]
        names = [n for n, _ in first.named_parameters()]
        for net in members[1:]:
            if [n for n, _ in net.named_parameters()] != names or net.kind != first.kind:
                raise ValueError("StackedPaperNet: members must have the same architecture")
        self.members = members
        self.kind = first.kind
        self.layers: list[_Layer] = []
        for name in first.conv_names:
            mod = getattr(first, name)
            kind = "free" if isinstance(mod, FreeConv2d) else "tiled" if isinstance(mod, TiledConv2d) else "conv"
            layer = _Layer(name, kind, mod)
            if isinstance(mod, TiledConv2d):
                layer.rows, layer.cols = mod.row_tile.to(device), mod.col_tile.to(device)
            self.layers.append(layer)
        with torch.no_grad():
            self.params: dict[str, Tensor] = {
                n: torch.stack([dict(net.named_parameters())[n].detach() for net in members])
                .to(device=device, dtype=dtype)
                .requires_grad_(True)
                for n in names
            }
        self.masks: dict[str, Tensor] = {}  # "<layer>.mask" (K, *weight) / "<layer>.input_mask" (K, 1, C, H, W)
        self.penalty_masks: dict[str, Tensor] = {}  # "<layer>" -> (K, oh, ow, kh, kw, C, O or 1)
        for layer in self.layers:
            if layer.kind != "free":
                continue
            subs = [getattr(net, layer.name) for net in members]
            if any(s.mask is not None for s in subs):
                w = subs[0].weight
                self.masks[f"{layer.name}.mask"] = torch.stack(
                    [s.mask if s.mask is not None else torch.ones_like(w, dtype=torch.bool) for s in subs]
                ).to(device)
            if any(s.input_mask is not None for s in subs):
                g = subs[0].geometry
                ones = torch.ones(g.in_channels, g.in_h, g.in_w, dtype=torch.bool)
                self.masks[f"{layer.name}.input_mask"] = torch.stack(
                    [(s.input_mask if s.input_mask is not None else ones).cpu().unsqueeze(0) for s in subs]
                ).to(device)
                wm = [s.input_weight_mask() for s in subs]
                shape = (g.out_h, g.out_w, g.kh, g.kw, g.in_channels, 1)
                self.penalty_masks[layer.name] = torch.stack(
                    [m.cpu() if m is not None else torch.ones(shape, dtype=torch.bool) for m in wm]
                ).to(device)

    @property
    def size(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def parameters(self) -> list[Tensor]:
        return list(self.params.values())

    # ------------------------------------------------------------------ forward
    def _free_weight(self, layer: _Layer) -> tuple[Tensor, Tensor | None]:
        """The layer's forward kernel as (K, oh, ow, kh, kw, C, O) and bias (K, oh, ow, O)."""
        w = self.params[f"{layer.name}.weight"]
        b = self.params.get(f"{layer.name}.bias")
        if layer.kind == "tiled":
            rows, cols = layer.rows, layer.cols
            assert rows is not None and cols is not None
            w = w.index_select(1, rows).index_select(2, cols).permute(0, 1, 2, 5, 6, 4, 3)
            b = None if b is None else b.index_select(1, rows).index_select(2, cols)
            return w, b
        mask = self.masks.get(f"{layer.name}.mask")
        return (w if mask is None else w * mask), b

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (K*B, C, H, W), member-major -> logits (K, B, classes)."""
        K = self.size
        B = x.shape[0] // K
        x5 = x.view(K, B, *x.shape[1:])
        if self.kind == "cnn":
            h = x5.transpose(0, 1).reshape(B, K * x.shape[1], x.shape[2], x.shape[3])
            for layer in self.layers:
                mod = layer.module
                assert isinstance(mod, nn.Conv2d)
                w = self.params[f"{layer.name}.weight"]
                b = self.params[f"{layer.name}.bias"]
                h = torch.relu(F.conv2d(h, w.flatten(0, 1), b.flatten(), stride=mod.stride, groups=K))
            feats = h.view(B, K, -1).transpose(0, 1)
        else:
            h = x5
            for layer in self.layers:
                mod = layer.module
                g = mod.geometry  # type: ignore[union-attr]
                in_mask = self.masks.get(f"{layer.name}.input_mask")
                if in_mask is not None:
                    h = h * in_mask
                w, b = self._free_weight(layer)
                h = torch.relu(
                    stacked_free_conv(
                        h,
                        w.reshape(K, g.positions, g.fan, g.out_channels),
                        None if b is None else b.reshape(K, g.positions, g.out_channels),
                        g,
                    )
                )
            feats = h.reshape(K, B, -1)
        p = self.params
        h = torch.relu(torch.baddbmm(p["fc1.bias"].unsqueeze(1), feats, p["fc1.weight"].transpose(1, 2)))
        return torch.baddbmm(p["fc2.bias"].unsqueeze(1), h, p["fc2.weight"].transpose(1, 2))

    # ------------------------------------------------------------------ penalty
    def share_penalty(self, radius: int) -> Tensor:
        """(K,) soft-sharing penalty of every member (``model_share_penalty`` of each net)."""
        total = next(iter(self.params.values())).new_zeros(self.size)
        for layer in self.layers:
            if layer.kind == "conv":
                continue
            w, _ = self._free_weight(layer)
            pm = self.penalty_masks.get(layer.name)
            if pm is not None:
                w = w * pm
            total = total + torch.func.vmap(lambda k: neighbour_penalty(k, radius))(w)
        return total

    # --------------------------------------------------------------- members
    def select(self, keep: list[int]) -> None:
        """Keep only the members at positions ``keep`` (new leaf tensors; masks follow)."""
        idx = torch.tensor(keep, dtype=torch.long, device=next(iter(self.params.values())).device)
        with torch.no_grad():
            self.params = {n: p.index_select(0, idx).detach().requires_grad_(True) for n, p in self.params.items()}
        self.masks = {n: m.index_select(0, idx) for n, m in self.masks.items()}
        self.penalty_masks = {n: m.index_select(0, idx) for n, m in self.penalty_masks.items()}
        self.members = [self.members[i] for i in keep]

    @torch.no_grad()
    def write_member(self, k: int) -> PaperNet:
        """Copy member ``k``'s current weights into its own module (CPU) and return it."""
        net = self.members[k]
        for n, p in net.named_parameters():
            p.copy_(self.params[n][k].to(device=p.device, dtype=p.dtype))
        return net
