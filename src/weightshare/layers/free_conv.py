"""Free convolution: a locally connected 2-D layer with the geometry of a convolution.

Every output position has its own kernel and bias (Ott et al. 2020's "free convolutional
network"). The layer supports the paper's variable connection patterns, converts from and to
an ``nn.Conv2d`` and offers several implementations (see ``_free_conv_impls``) selected by
``impl``; ``"auto"`` is the fastest measured one (``docs/benchmarks.md``).

``torch.nn`` has no locally connected layer (``nn.Unfold`` + matmul is the usual recipe, kept
here as ``impl="unfold"``), which is why this module exists.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightshare.errors import ConfigError
from weightshare.layers._free_conv_geometry import (
    FreeConvGeometry,
    IntPair,
    Padding,
    make_geometry,
)
from weightshare.layers._free_conv_impls import IMPLS
from weightshare.layers.common import ReferenceKernelMixin, adopt_geometry, check_convertible

__all__ = [
    "CONNECTIVITY_MODES",
    "DEFAULT_IMPL",
    "IMPL_NAMES",
    "INIT_NAMES",
    "FreeConv2d",
    "free_conv2d",
    "glorot_limit",
]

# Fastest in scripts/bench_layers.py on CPU (fp32 and bf16); also correct on CUDA.
DEFAULT_IMPL = "bmm"
IMPL_NAMES = ("auto", *IMPLS)
INIT_NAMES = ("conv", "keras")
CONNECTIVITY_MODES = ("weight", "input")

_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)


def _resolve_impl(impl: str) -> str:
    if impl not in IMPL_NAMES:
        raise ConfigError("model.impl", impl, f"one of {list(IMPL_NAMES)}")
    return DEFAULT_IMPL if impl == "auto" else impl


def free_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    *,
    impl: str = "auto",
) -> Tensor:
    """Functional free convolution.

    ``x`` is (B, C, H, W); ``weight`` is in the kernel-view layout
    ``(out_h, out_w, out_channels, in_channels, kh, kw)`` with any strides (a permuted view or an
    ``expand()``-ed per-tile kernel works, and its gradient is summed back through the expand by
    autograd); ``bias`` is ``(out_h, out_w, out_channels)`` or None. Returns
    ``(B, out_channels, out_h, out_w)``; with the fast implementations this is a view of
    position-major memory, so use ``reshape``/``flatten`` rather than ``view`` on it.

    Under ``torch.func.vmap`` (a pack of networks) the members run as one gather and batched
    matmul (:mod:`weightshare.layers.free_conv_batched`); under other ``torch.func`` transforms
    (``grad``, ``jvp``) the ``unfold`` implementation is used.
    """
    if weight.dim() != 6:
        raise ValueError(f"free_conv2d: weight must be (oh, ow, out, in, kh, kw), got shape {tuple(weight.shape)}")
    if x.dim() != 4:
        raise ValueError(f"free_conv2d: input must be (B, C, H, W), got shape {tuple(x.shape)}")
    oh, ow, out_c, in_c, kh, kw = weight.shape
    g = make_geometry(in_c, out_c, (kh, kw), stride, padding, dilation, (x.shape[2], x.shape[3]))
    if x.shape[1] != in_c or (g.out_h, g.out_w) != (oh, ow):
        raise ValueError(
            f"free_conv2d: input {tuple(x.shape)} with this stride/padding/dilation has C={x.shape[1]} and "
            f"{(g.out_h, g.out_w)} positions, but the weight {tuple(weight.shape)} needs C={in_c}, {(oh, ow)}"
        )
    if bias is not None and tuple(bias.shape) != (oh, ow, out_c):
        raise ValueError(f"free_conv2d: bias must be {(oh, ow, out_c)}, got {tuple(bias.shape)}")
    return _apply(x, weight, bias, g, _resolve_impl(impl))


def _apply(x: Tensor, weight: Tensor, bias: Tensor | None, g: FreeConvGeometry, impl: str) -> Tensor:
    if _functorch_active():
        if impl == "unfold":
            return IMPLS[impl](x, weight, bias, g)
        from weightshare.layers.free_conv_batched import FreeConvFunction

        return FreeConvFunction.apply(x, weight, bias, g, impl)
    return IMPLS[impl](x, weight, bias, g)


def glorot_limit(g: FreeConvGeometry, init: str) -> float:
    """Bound ``a`` of Glorot uniform ``U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``.

    ``conv``: the convolution's fans (``fan_in = C*kh*kw``, ``fan_out = O*kh*kw``), the CNN's scale.
    ``keras``: Keras' ``_compute_fans`` on LocallyConnected2D's kernel ``(P, kh*kw*C, O)``
    multiplies the leading dimension in: ``fan_in = P*kh*kw*C``, ``fan_out = P*O``
    (MNIST layer 1: 0.0294 instead of the conv's 0.142).
    """
    if init == "conv":
        fan_in, fan_out = g.fan, g.out_channels * g.kh * g.kw
    elif init == "keras":
        fan_in, fan_out = g.positions * g.fan, g.positions * g.out_channels
    else:
        raise ConfigError("model.fcn_init", init, f"one of {list(INIT_NAMES)}")
    return math.sqrt(6.0 / (fan_in + fan_out))


class FreeConv2d(ReferenceKernelMixin):
    """Locally connected layer with conv geometry (independent kernel and bias per position).

    Parameters are stored as ``weight`` ``(oh, ow, kh, kw, in, out)`` (the layout the batched
    matmul reads without a copy) and ``bias`` ``(oh, ow, out)``; :meth:`kernel_view` gives the
    documented ``(oh, ow, out, in, kh, kw)`` layout as a permuted view.

    Variable connection patterns (``connectivity`` = fraction removed):

    * ``connectivity_mode="weight"`` (the paper's text): an independent Bernoulli mask over
      every weight (position, filter, input channel, kernel offset), buffer ``mask``. The stored
      weights under the mask are zeroed at construction and after loading, and the forward pass
      multiplies by the mask, so their gradient is exactly 0: Adam's moments stay 0 and neither
      the update nor (coupled or decoupled) weight decay can move them.
    * ``connectivity_mode="input"`` (the published code): one mask over the layer's input units
      ``(C, H, W)``, shared by every position and filter, buffer ``input_mask``; the input is
      multiplied by it, as the original's masking layer did. Weights reading a removed input keep
      their initial value and get exactly zero gradient, as in the original.

    :meth:`effective_kernel` is the kernel with either mask folded in (what the layer computes
    with); the share penalty, the filter distances and the filter images read it, so removed
    weights stay out of them (and the penalty's gradient cannot move them).

    The mask is drawn from a ``torch.Generator`` seeded with ``mask_seed``; with ``None`` the
    seed is drawn from torch's global RNG (after the weights), so seeding the run fixes it, and
    one run seed gives every connectivity the same initial weights and nested masks. The mask
    lives in ``state_dict`` and so in checkpoints.
    """

    reference_kernel: Tensor | None
    mask_seed: int
    mask: Tensor | None
    input_mask: Tensor | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: Padding = 0,
        dilation: IntPair = 1,
        bias: bool = True,
        *,
        input_size: IntPair,
        init: str = "conv",
        connectivity: float = 0.0,
        connectivity_mode: str = "weight",
        mask_seed: int | None = None,
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        g = adopt_geometry(
            self, make_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, input_size), padding
        )
        if init not in INIT_NAMES:
            raise ConfigError("model.fcn_init", init, f"one of {list(INIT_NAMES)}")
        if connectivity_mode not in CONNECTIVITY_MODES:
            raise ConfigError("model.connectivity_mode", connectivity_mode, f"one of {list(CONNECTIVITY_MODES)}")
        if (
            isinstance(connectivity, bool)
            or not isinstance(connectivity, (int, float))
            or not (0.0 <= float(connectivity) < 1.0)
        ):
            raise ConfigError("model.connectivity", connectivity, "a number in [0, 1)")
        self.init, self.connectivity_mode = init, connectivity_mode
        self.connectivity = float(connectivity)
        self.impl = impl
        _resolve_impl(impl)

        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(g.out_h, g.out_w, g.kh, g.kw, in_channels, out_channels, **factory))
        self.bias = nn.Parameter(torch.empty(g.out_h, g.out_w, out_channels, **factory)) if bias else None
        self.register_buffer("reference_kernel", None)
        self.register_buffer("mask", None)
        self.register_buffer("input_mask", None)
        self.reset_parameters()
        # The seed is drawn even without a mask and after the weights, so that for one global seed
        # every connectivity gives the same initial weights and nested masks (the removed set at
        # p is a subset of the one at p' > p): a VCP sweep varies nothing but the pattern.
        self.mask_seed = (
            int(torch.randint(0, 2**62, (1,), device="cpu").item()) if mask_seed is None else int(mask_seed)
        )
        if self.connectivity > 0.0:
            self._draw_mask(device)
            self.apply_mask_()
        self.register_load_state_dict_post_hook(FreeConv2d._reapply_mask_hook)

    # ---- construction -------------------------------------------------------------------------

    def _draw_mask(self, device: torch.device | str | None) -> None:
        assert self.mask_seed is not None
        gen = torch.Generator().manual_seed(self.mask_seed)
        g = self.geometry
        shape = tuple(self.weight.shape) if self.connectivity_mode == "weight" else (g.in_channels, g.in_h, g.in_w)
        keep = torch.rand(shape, generator=gen) >= self.connectivity
        self.register_buffer("mask" if self.connectivity_mode == "weight" else "input_mask", keep.to(device))

    def reset_parameters(self) -> None:
        """Glorot uniform at the chosen scale (independent draw per position), zero bias."""
        a = glorot_limit(self.geometry, self.init)
        with torch.no_grad():
            self.weight.uniform_(-a, a)
            if self.bias is not None:
                self.bias.zero_()
        self.apply_mask_()

    @torch.no_grad()
    def apply_mask_(self) -> None:
        """Zero the stored weights that the weight mask removes (no-op without one)."""
        if self.mask is not None:
            self.weight.mul_(self.mask)

    @staticmethod
    def _reapply_mask_hook(module: nn.Module, incompatible_keys: Any) -> None:
        assert isinstance(module, FreeConv2d)
        module.apply_mask_()

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, input_size: IntPair, **kwargs: Any) -> FreeConv2d:
        """Unshare a convolution: every position gets a copy of its kernel and bias.

        The result computes the same function as ``conv`` on inputs of ``input_size``
        (unless ``connectivity`` > 0 is passed, which then removes connections from the copy).
        ``reference_kernel`` keeps the conv's kernel ``(out, in, kh, kw)`` for distance metrics.
        """
        check_convertible(conv, "unshared")
        w = conv.weight
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride,  # type: ignore[arg-type]
            padding=conv.padding,  # type: ignore[arg-type]
            dilation=conv.dilation,  # type: ignore[arg-type]
            bias=conv.bias is not None,
            input_size=input_size,
            device=w.device,
            dtype=w.dtype,
            **kwargs,
        )
        with torch.no_grad():
            layer.kernel_view().copy_(w.detach().expand_as(layer.kernel_view()))
            if conv.bias is not None:
                assert layer.bias is not None
                layer.bias.copy_(conv.bias.detach().expand_as(layer.bias))
            layer.apply_mask_()
        layer.reference_kernel = w.detach().clone()
        return layer

    # ---- views and conversion ------------------------------------------------------------------

    @property
    def output_size(self) -> tuple[int, int]:
        """(out_h, out_w): the grid of positions."""
        return (self.geometry.out_h, self.geometry.out_w)

    def kernel_view(self) -> Tensor:
        """The weight as ``(out_h, out_w, out_channels, in_channels, kh, kw)``: a view, no copy."""
        return self.weight.permute(0, 1, 5, 4, 2, 3)

    def bias_view(self) -> Tensor | None:
        """The bias as ``(out_h, out_w, out_channels)`` (the stored tensor), or None."""
        return self.bias

    def _forward_kernel(self) -> Tensor:
        """The kernel handed to the implementation: ``kernel_view()`` times the weight mask.

        The input mask is applied to the input instead (one multiply of the input, not a mask
        gathered to every position), so this is :meth:`effective_kernel` only in weight mode.
        """
        w = self.weight if self.mask is None else self.weight * self.mask
        return w.permute(0, 1, 5, 4, 2, 3)

    def input_weight_mask(self) -> Tensor | None:
        """``input`` mode: which weights read a kept input, ``(oh, ow, kh, kw, in, 1)`` bool.

        The input mask seen through every position's window (``F.unfold`` of the mask, i.e. the
        same gather the layer applies to the input); weights reading the zero padding count as
        kept (padding is not a removed connection). ``None`` without an input mask.
        """
        if self.input_mask is None:
            return None
        g = self.geometry
        t, b, left, r = g.pad
        m = F.pad(self.input_mask[None].float(), (left, r, t, b), value=1.0)
        cols = F.unfold(m, (g.kh, g.kw), dilation=(g.dh, g.dw), stride=(g.sh, g.sw))  # (1, C*kh*kw, P)
        cols = cols.view(g.in_channels, g.kh, g.kw, g.out_h, g.out_w)
        return cols.permute(3, 4, 1, 2, 0).unsqueeze(-1) > 0.5

    def effective_kernel(self) -> Tensor:
        """The kernel as the layer computes with it, ``(out_h, out_w, out, in, kh, kw)``.

        ``kernel_view()`` with the connection mask folded in: the weight mask (``weight`` mode)
        or, in ``input`` mode, zero where a weight reads a removed input (:meth:`input_weight_mask`),
        so the forward pass equals ``free_conv2d(x, effective_kernel(), bias)`` on the unmasked
        input. Without connectivity it is ``kernel_view()`` itself (a view, no copy). In the
        autograd graph: a penalty or metric on it gives removed weights exactly zero gradient.
        """
        w_mask = self.input_weight_mask()
        if w_mask is None:
            return self._forward_kernel()
        return (self.weight * w_mask).permute(0, 1, 5, 4, 2, 3)

    @torch.no_grad()
    def to_conv(self) -> tuple[nn.Conv2d, dict[str, float]]:
        """Share again: the ``nn.Conv2d`` whose kernel and bias are the means over positions.

        The dict reports how far the positions are from that mean:
        ``kernel_rel_rms_dist`` = RMS over positions of ``||W_p - mean||_F`` / ``||mean||_F``;
        ``kernel_std_mean`` / ``kernel_std_max`` = mean / max over kernel entries of the
        population std over positions (same for ``bias_std_*``); ``mean_kernel_norm``.
        """
        k = self.effective_kernel().flatten(0, 1)  # (P, O, C, kh, kw)
        mean = k.mean(0)
        std = k.std(0, unbiased=False)
        dist = (k - mean).flatten(1).norm(dim=1)
        mean_norm = mean.norm()
        spread: dict[str, float] = {
            "positions": float(k.shape[0]),
            "mean_kernel_norm": float(mean_norm),
            "kernel_rel_rms_dist": float(dist.pow(2).mean().sqrt() / mean_norm) if mean_norm > 0 else math.inf,
            "kernel_std_mean": float(std.mean()),
            "kernel_std_max": float(std.max()),
        }
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,  # type: ignore[arg-type]
            dilation=self.dilation,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        conv.weight.copy_(mean)
        if self.bias is not None:
            b = self.bias.flatten(0, 1)
            conv.bias.copy_(b.mean(0))  # type: ignore[union-attr]
            bstd = b.std(0, unbiased=False)
            spread["bias_std_mean"] = float(bstd.mean())
            spread["bias_std_max"] = float(bstd.max())
        return conv, spread

    # ---- forward -----------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        g = self.geometry
        if x.dim() != 4 or tuple(x.shape[1:]) != (g.in_channels, g.in_h, g.in_w):
            raise ValueError(f"FreeConv2d expects input (B, {g.in_channels}, {g.in_h}, {g.in_w}), got {tuple(x.shape)}")
        if self.input_mask is not None:
            x = x * self.input_mask
        return _apply(x, self._forward_kernel(), self.bias, g, _resolve_impl(self.impl))

    def extra_repr(self) -> str:
        g = self.geometry
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, input_size={self.input_size}, "
            f"output_size={(g.out_h, g.out_w)}, bias={self.bias is not None}, "
            f"init={self.init!r}, impl={self.impl!r}"
        )
        if self.connectivity > 0:
            s += f", connectivity={self.connectivity}, connectivity_mode={self.connectivity_mode!r}"
        return s
