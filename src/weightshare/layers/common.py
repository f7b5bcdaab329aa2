"""Helpers shared by the free layers, the soft-sharing penalty and the filter metrics.

One place for what ``FreeConv2d`` and ``TiledConv2d`` (and their consumers) must do alike:

- :func:`filter_kernel`: the per-position kernel a layer actually computes with (connection
  masks applied). The penalty, the filter distances and the filter images all read it, so a
  weight the layer has removed is neither pulled by the penalty nor counted by a metric.
- :class:`ReferenceKernelMixin`: loading a saved ``reference_kernel`` into a freshly built
  layer whose buffer is still ``None``.
- :func:`check_convertible`: which ``nn.Conv2d`` a free layer can be built from.
- :func:`adopt_geometry`: the ``nn.Conv2d``-style attributes every free layer exposes.
- :func:`is_radius` / :func:`check_radius` / :func:`check_radii`: the one definition of a
  neighbourhood radius (an integer >= 1), used by the penalty, the metrics and the callback.
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral
from typing import Any

import torch
from torch import Tensor, nn

from weightshare.errors import ConfigError
from weightshare.layers._free_conv_geometry import FreeConvGeometry, Padding, bad_argument

__all__ = [
    "ReferenceKernelMixin",
    "check_convertible",
    "check_radii",
    "check_radius",
    "filter_kernel",
    "is_radius",
]


def filter_kernel(module: nn.Module) -> Tensor:
    """The kernel ``(out_h, out_w, out, in, kh, kw)`` as ``module`` computes with it.

    ``module.effective_kernel()`` when the layer has one (``FreeConv2d``: connection masks
    applied; ``TiledConv2d``: the per-position kernel), else ``module.kernel_view()`` (any
    other layer following the ``kernel_view`` contract, which then has no mask). Stays in the
    autograd graph: a penalty on it gives removed weights exactly zero gradient.
    """
    effective = getattr(module, "effective_kernel", None)
    if callable(effective):
        return effective()
    view = getattr(module, "kernel_view", None)
    if not callable(view):
        raise TypeError(f"{type(module).__name__} has neither effective_kernel() nor kernel_view()")
    return view()


class ReferenceKernelMixin(nn.Module):
    """Loads a saved ``reference_kernel`` buffer into a layer built without one.

    ``from_conv`` sets ``reference_kernel`` (the convolution the layer was unshared from), but a
    model builder creates the plain layer with the buffer ``None``, and ``load_state_dict``
    skips ``None`` buffers, so resuming a converted layer would fail with an unexpected key.
    The buffer is materialised (on the device of ``weight``) before the normal loading.
    """

    reference_kernel: Tensor | None
    weight: nn.Parameter

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "reference_kernel")
        if saved is not None and self.reference_kernel is None:
            self.reference_kernel = torch.empty_like(saved, device=self.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def adopt_geometry(layer: nn.Module, g: FreeConvGeometry, padding: Padding) -> FreeConvGeometry:
    """Set the attributes ``nn.Conv2d`` users expect on a free layer with geometry ``g``.

    ``geometry``, ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``dilation``,
    ``padding`` (as given when a string, else ``(ph, pw)``) and ``input_size``.
    """
    layer.geometry = g
    layer.in_channels, layer.out_channels = g.in_channels, g.out_channels
    layer.kernel_size, layer.stride, layer.dilation = (g.kh, g.kw), (g.sh, g.sw), (g.dh, g.dw)
    layer.padding = padding if isinstance(padding, str) else (g.pad[0], g.pad[2])
    layer.input_size = (g.in_h, g.in_w)
    return g


def check_convertible(conv: nn.Conv2d, target: str) -> None:
    """Raise unless ``conv`` is a zero-padded, ``groups=1`` convolution (``target``: what fails)."""
    if conv.groups != 1:
        raise bad_argument("conv.groups", conv.groups, f"1 (grouped convolutions cannot be {target})")
    if conv.padding_mode != "zeros":
        raise bad_argument("conv.padding_mode", conv.padding_mode, "'zeros'")


def is_radius(value: object) -> bool:
    """An integer (Python or NumPy) >= 1, not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool) and int(value) >= 1


def check_radius(value: object, key: str) -> int:
    """``int(value)`` if :func:`is_radius`, else ``ConfigError(key, value, "an integer >= 1")``."""
    if not is_radius(value):
        raise ConfigError(key, value, "an integer >= 1")
    return int(value)  # type: ignore[call-overload]


def check_radii(values: Iterable[object], key: str, *, allow_empty: bool = False) -> list[int]:
    """A list of radii as ints; raises ``ConfigError(key, list(values), ...)`` naming the whole list."""
    radii = list(values)
    if (not radii and not allow_empty) or not all(is_radius(r) for r in radii):
        allowed = "a list of integers >= 1" if allow_empty else "a non-empty list of integers >= 1"
        raise ConfigError(key, radii, allowed)
    return [int(r) for r in radii]  # type: ignore[call-overload]
