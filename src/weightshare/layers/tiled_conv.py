"""Partial weight sharing: output positions grouped into t x t tiles that share one kernel.

``TiledConv2d`` has the geometry of a free convolution (``FreeConv2d``: a separate kernel at
every output position) but ties the positions of each ``t x t`` tile of the output map
together, so ``share_tile`` becomes a continuous knob between the two extremes of the paper:

- ``tile = 1``: every position is its own tile, the layer *is* a ``FreeConv2d``;
- ``tile >= max(out_h, out_w)``: one tile covers the map, the layer *is* an ``nn.Conv2d``;
- otherwise ``ceil(out_h / t) x ceil(out_w / t)`` tiles, tile ``(a, b)`` covering rows
  ``a*t .. a*t+t-1`` and columns ``b*t .. b*t+t-1`` (the last tile row/column is cut off at
  the map's edge, so it may be smaller).

Each tile holds one kernel and one bias: ``weight`` is ``(tiles_h, tiles_w, out, in, kh, kw)``,
``bias`` is ``(tiles_h, tiles_w, out)``. The forward pass gathers the tile parameters to
positions with ``index_select`` and calls the fast functional ``free_conv2d``; the backward of
``index_select`` adds up the gradients of a tile's positions into the tile's parameters, which is
exactly the gradient of a shared kernel.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from weightshare.errors import ConfigError
from weightshare.layers._free_conv_geometry import IntPair, Padding, make_geometry
from weightshare.layers.common import ReferenceKernelMixin, adopt_geometry, check_convertible, filter_kernel
from weightshare.layers.free_conv import IMPL_NAMES, INIT_NAMES, free_conv2d, glorot_limit

__all__ = ["TiledConv2d"]


class TiledConv2d(ReferenceKernelMixin):
    """Locally connected layer whose t x t tiles of output positions share a kernel and bias.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as
            ``nn.Conv2d`` / ``FreeConv2d`` (same geometry rules, ``padding='same'`` included).
        input_size: ``(H, W)`` of the input map (a locally connected layer needs it to know
            its positions).
        tile: side ``t >= 1`` of the square tiles (``model.share_tile``).
        init: ``"conv"``: Glorot uniform with the fans of the equivalent convolution
            (``in*kh*kw`` and ``out*kh*kw``), the project default for free layers; ``"keras"``:
            the fans Keras' ``LocallyConnected2D`` uses (``in*kh*kw*P`` and ``out*P`` with ``P``
            output positions), so ``tile=1`` starts like the original FCN. Biases start at zero.
            The same limits as ``FreeConv2d`` (its ``glorot_limit``), whatever the tile.
        impl: the ``free_conv2d`` implementation (``model.impl``), ``"auto"`` = the fastest.
    """

    reference_kernel: Tensor | None

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
        tile: int,
        init: str = "conv",
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
            raise ConfigError("model.share_tile", tile, "an integer >= 1 (1 = FCN, >= map size = CNN)")
        if init not in INIT_NAMES:
            raise ConfigError("model.fcn_init", init, f"one of {list(INIT_NAMES)}")
        if impl not in IMPL_NAMES:
            raise ConfigError("model.impl", impl, f"one of {list(IMPL_NAMES)}")
        # the free layer's geometry rules (validation, 'same'/'valid' padding, output size)
        g = adopt_geometry(
            self, make_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, input_size), padding
        )
        self.output_size = (g.out_h, g.out_w)
        self.tile, self.init, self.impl = tile, init, impl
        out_h, out_w = self.output_size
        self.tiles = (math.ceil(out_h / tile), math.ceil(out_w / tile))
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(*self.tiles, out_channels, in_channels, g.kh, g.kw, **factory))
        self.bias = nn.Parameter(torch.empty(*self.tiles, out_channels, **factory)) if bias else None
        # position -> tile index along each axis; not saved (derived from the geometry)
        self.register_buffer("row_tile", torch.arange(out_h, device=device) // tile, persistent=False)
        self.register_buffer("col_tile", torch.arange(out_w, device=device) // tile, persistent=False)
        # the shared kernel the layer started from (set by from_conv), as in FreeConv2d
        self.register_buffer("reference_kernel", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot uniform kernels (fans per ``init``, see the class docstring), zero biases."""
        limit = glorot_limit(self.geometry, self.init)
        with torch.no_grad():
            self.weight.uniform_(-limit, limit)
            if self.bias is not None:
                self.bias.zero_()

    def _expand(self, tiled: Tensor) -> Tensor:
        return tiled.index_select(0, self.row_tile).index_select(1, self.col_tile)

    def kernel_view(self) -> Tensor:
        """Per-position kernels ``(out_h, out_w, out, in, kh, kw)``.

        A gathered **copy** (not a view: positions of a tile repeat the tile's storage, which no
        strided view of ``(out_h, out_w, ...)`` can express unless ``tile = 1``). It stays in the
        autograd graph, so penalties and metrics computed on it reach ``weight``.
        """
        return self._expand(self.weight)

    def effective_kernel(self) -> Tensor:
        """The kernel as the layer computes with it: :meth:`kernel_view` (a tiled layer has no
        connection mask). The same method as ``FreeConv2d.effective_kernel``, so penalties and
        metrics read every free layer through one call (``layers.common.filter_kernel``).
        """
        return self.kernel_view()

    def bias_view(self) -> Tensor | None:
        """Per-position biases ``(out_h, out_w, out)`` (a gathered copy), or ``None``."""
        return None if self.bias is None else self._expand(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return free_conv2d(
            x, self.kernel_view(), self.bias_view(), self.stride, self.padding, self.dilation, impl=self.impl
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"input_size={self.input_size}, output_size={self.output_size}, tile={self.tile}, "
            f"tiles={self.tiles}, bias={self.bias is not None}"
        )

    # ------------------------------------------------------------------ conversions

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, input_size: IntPair, tile: int, **kwargs: Any) -> TiledConv2d:
        """A tiled layer computing exactly what ``conv`` computes: every tile gets its kernel.

        ``reference_kernel`` keeps a copy of the convolution's kernel (filter distance
        "to_ref"). Only zero-padded, ``groups=1`` convolutions are convertible. ``kwargs``
        (``init``, ``impl``) go to the constructor.
        """
        check_convertible(conv, "tiled")
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.bias is not None,
            input_size=input_size,
            tile=tile,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **kwargs,
        )
        with torch.no_grad():
            layer.weight.copy_(conv.weight.expand_as(layer.weight))
            if conv.bias is not None:
                layer.bias.copy_(conv.bias.expand_as(layer.bias))
        layer.reference_kernel = conv.weight.detach().clone()
        return layer

    @classmethod
    def from_free(cls, free: nn.Module, tile: int, **kwargs: Any) -> TiledConv2d:
        """Tie a free layer's positions into tiles: each tile's kernel (and bias) is the mean over
        the tile's positions. ``tile=1`` reproduces the free layer exactly.

        ``free`` is a ``FreeConv2d`` (or anything with its geometry attributes and
        ``kernel_view()`` / ``bias_view()``); its ``reference_kernel`` is carried over. A free
        layer's connection mask is not carried: the mean is over its effective kernel
        (``filter_kernel``: removed weights count as zero, in either connectivity mode).
        """
        kernel = filter_kernel(free).detach()
        bias = free.bias_view()
        kwargs.setdefault("impl", getattr(free, "impl", "auto"))
        layer = cls(
            free.in_channels,
            free.out_channels,
            free.kernel_size,
            free.stride,
            free.padding,
            free.dilation,
            bias is not None,
            input_size=free.input_size,
            tile=tile,
            device=kernel.device,
            dtype=kernel.dtype,
            **kwargs,
        )
        with torch.no_grad():
            layer.weight.copy_(layer._tile_mean(kernel))
            if bias is not None:
                layer.bias.copy_(layer._tile_mean(bias.detach()))
        ref = getattr(free, "reference_kernel", None)
        if ref is not None:
            layer.reference_kernel = ref.detach().clone()
        return layer

    def _tile_mean(self, per_position: Tensor) -> Tensor:
        """Mean over each tile's positions: ``(out_h, out_w, ...)`` -> ``(tiles_h, tiles_w, ...)``."""
        rest = per_position.shape[2:]
        flat = per_position.reshape(per_position.shape[0], per_position.shape[1], -1)
        sums = flat.new_zeros(self.tiles[0], per_position.shape[1], flat.shape[-1])
        sums.index_add_(0, self.row_tile, flat)
        sums = sums.new_zeros(self.tiles[0], self.tiles[1], flat.shape[-1]).index_add_(1, self.col_tile, sums)
        counts_h = torch.bincount(self.row_tile, minlength=self.tiles[0]).to(flat.dtype)
        counts_w = torch.bincount(self.col_tile, minlength=self.tiles[1]).to(flat.dtype)
        means = sums / (counts_h[:, None, None] * counts_w[None, :, None])
        return means.reshape(*self.tiles, *rest)
