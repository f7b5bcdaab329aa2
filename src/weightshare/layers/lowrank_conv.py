"""Low-rank locally connected layer (Elsayed, Ramachandran, Shlens, Kornblith, ICML 2020).

"Revisiting Spatial Invariance with Low-Rank Local Connectivity": the kernel at output
position ``(i, j)`` is a position-dependent combination of ``R`` shared basis kernels,

    W(i, j) = sum_r a_r(i, j) K_r,

so ``R`` is a knob between a convolution (``R = 1``: one kernel everywhere) and a locally
connected layer (``R = positions`` with one-hot combining weights: the FCN).

Forward pass: the ``R`` bases are one ``F.conv2d`` with ``R * out`` filters, and its output
``(B, R, out, oh, ow)`` is summed over ``r`` with the weights ``a_r(i, j)``. The per-position
kernels are never materialised there (they would cost ``positions`` times a kernel);
:meth:`effective_kernel` builds them only for the filter metrics and images.

What follows the authors' public code (google-research ``low_rank_local_connectivity/
layers.py``, ``LowRankLocallyConnected2D``), which we checked because the paper's text leaves
these details open:

- **Normalisation** (``normalize``): ``"softmax"`` over ``r`` at each position (their default,
  "normalizing to unit sum"), so every position's kernel is a convex combination of the bases;
  ``"norm"``: unit L2 norm over ``r`` with their epsilon: ``z / sqrt(max(sum_r z_r^2, 1e-12))``
  (``tf.math.l2_normalize``, which floors the *squared* norm; ``F.normalize`` would floor the
  norm itself at 1e-12, a different answer for ``|z| < 1e-6``); ``"none"``: the raw weights
  (used by the FCN equivalence test, where the combining weights are exactly one-hot).
- **Combining** (``combining``): ``"full"``: one learned logit per position and basis,
  ``(oh, ow, R)``; ``"factorized"``: a row term plus a column term, ``(oh, R) + (ow, R)``,
  added before the normalisation (their ``share_row_combining_weights`` and
  ``share_col_combining_weights``, both on by default there, and ``model.combining``'s
  default in ``conf/model/lowrank.yaml``). The layer's own default stays ``"full"``: the
  general form, of which the FCN equivalence and dynamic sharing are special cases.
- **Initialisation** of the logits ("conv_init"): the constant ``1/sqrt(R)`` (``full``) or
  ``1/(2 sqrt(R))`` per term (``factorized``), so after the softmax every position starts
  with the same uniform weights ``1/R``: the layer starts as a convolution with kernel
  ``mean_r K_r``. The bases (``basis_init``): ``"he_uniform"`` is theirs (Keras'
  ``he_uniform`` on the ``(kh, kw, C, R*out)`` bases: ``U(-a, a)``, ``a = sqrt(6 / (kh kw C))``);
  ``"glorot"`` (the default) is the protocol's init of the CNN and FCN: Glorot uniform with
  the convolution's fans (``init="conv"``) or Keras' locally connected fans
  (``init="keras"``), like ``FreeConv2d``, so a low-rank network starts on the same scale as
  the networks it sits between. Either way the effective kernel's spread at init is the
  bases' divided by ``sqrt(R)`` (the mean of ``R`` independent draws), as in their code.
- **Biases**, two independent switches as their ``use_bias`` and ``use_spatial_bias``: a
  per-filter bias ``(out,)`` (``bias``) and a spatial bias ``(oh, ow)`` shared by the filters
  (``spatial_bias``; ``factorized``: row ``(oh,)`` plus column ``(ow,)``), both on and zero at
  init by default. ``spatial_bias=False`` keeps only the filter bias, which makes ``R = 1``
  exactly ``nn.Conv2d``.

Parameters of one layer, ``P = oh * ow`` positions, block ``B = out * in * kh * kw``:
``R * B`` (bases) + ``P * R`` (full) or ``(oh + ow) * R`` (factorized) + ``out`` (filter bias,
if on) + ``P`` (full) or ``oh + ow`` (factorized) (spatial bias, if on).

The input-dependent combining network of the paper (its "LRLC with input-dependent weights")
is not implemented: the issue asks for the fixed combining weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightshare.errors import ConfigError
from weightshare.layers._free_conv_geometry import IntPair, Padding, make_geometry
from weightshare.layers.common import adopt_geometry
from weightshare.layers.free_conv import INIT_NAMES, glorot_limit

__all__ = [
    "BASIS_INITS",
    "COMBINING_MODES",
    "NORMALIZATIONS",
    "NORM_EPS",
    "LowRankConv2d",
    "he_uniform_limit",
    "normalize_combining",
]

COMBINING_MODES = ("full", "factorized")
NORMALIZATIONS = ("softmax", "norm", "none")
#: ``model.basis_init``: the protocol's Glorot uniform (fans per ``model.fcn_init``) or the authors' He uniform
BASIS_INITS = ("glorot", "he_uniform")
#: floor of the squared L2 norm in ``normalize="norm"`` (``tf.math.l2_normalize``'s epsilon, as the authors)
NORM_EPS = 1e-12


def normalize_combining(z: Tensor, normalize: str) -> Tensor:
    """Normalise combining logits over their last dimension ``r``, as the authors' layer.

    ``softmax``: unit sum; ``norm``: ``z * rsqrt(max(sum_r z_r^2, NORM_EPS))`` (a zero vector
    stays zero, a tiny one is scaled by ``1e6`` rather than blown up to unit norm); ``none``: ``z``.
    One function for the single layer and the packed one, so both normalise alike.
    """
    if normalize == "softmax":
        return torch.softmax(z, dim=-1)
    if normalize == "norm":
        return z * torch.rsqrt(z.square().sum(dim=-1, keepdim=True).clamp_min(NORM_EPS))
    return z


def he_uniform_limit(in_channels: int, kh: int, kw: int) -> float:
    """Bound of Keras' ``he_uniform`` on a ``(kh, kw, C, n)`` kernel: ``sqrt(6 / (kh * kw * C))``."""
    return math.sqrt(6.0 / (kh * kw * in_channels))


class LowRankConv2d(nn.Module):
    """Locally connected layer whose per-position kernels are combinations of ``rank`` bases.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as
            ``nn.Conv2d`` / ``FreeConv2d`` (same geometry rules).
        input_size: ``(H, W)`` of the input map (the positions depend on it).
        rank: number of basis kernels ``R``, ``1 <= R <= positions`` (``model.rank``).
        combining: ``"full"`` or ``"factorized"`` (``model.combining``, see the module docstring).
        normalize: ``"softmax"`` (the paper's code), ``"norm"`` or ``"none"``.
        spatial_bias: the paper code's spatial bias (``model.spatial_bias``), independent of ``bias``.
        basis_init: ``"glorot"`` or ``"he_uniform"`` (theirs) for the bases (``model.basis_init``).
        init: ``"conv"`` or ``"keras"`` fans of the Glorot uniform bases (``model.fcn_init``).

    ``effective_kernel()`` / ``kernel_view()`` give the per-position kernels
    ``(oh, ow, out, in, kh, kw)`` (a computed tensor in the autograd graph, not a view), and
    ``bias_view()`` the per-position bias ``(oh, ow, out)``: the contract of ``FreeConv2d``, so
    the filter distances, filter images and the share penalties read this layer unchanged.
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
        rank: int,
        combining: str = "full",
        normalize: str = "softmax",
        spatial_bias: bool = True,
        basis_init: str = "glorot",
        init: str = "conv",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        g = adopt_geometry(
            self, make_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, input_size), padding
        )
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= g.positions:
            raise ConfigError("model.rank", rank, f"an integer in [1, {g.positions}] (the layer's output positions)")
        if combining not in COMBINING_MODES:
            raise ConfigError("model.combining", combining, f"one of {list(COMBINING_MODES)}")
        if normalize not in NORMALIZATIONS:
            raise ConfigError("normalize", normalize, f"one of {list(NORMALIZATIONS)}")
        if init not in INIT_NAMES:
            raise ConfigError("model.fcn_init", init, f"one of {list(INIT_NAMES)}")
        if basis_init not in BASIS_INITS:
            raise ConfigError("model.basis_init", basis_init, f"one of {list(BASIS_INITS)}")
        self.basis_init = basis_init
        self.output_size = (g.out_h, g.out_w)
        self.rank, self.combining, self.normalize, self.init = rank, combining, normalize, init
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        oh, ow = self.output_size
        self.bases = nn.Parameter(torch.empty(rank, out_channels, in_channels, g.kh, g.kw, **factory))
        if combining == "full":
            self.combining_logits = nn.Parameter(torch.empty(oh, ow, rank, **factory))
        else:
            self.combining_row = nn.Parameter(torch.empty(oh, rank, **factory))
            self.combining_col = nn.Parameter(torch.empty(ow, rank, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.spatial_bias = bool(spatial_bias)
        if self.spatial_bias:
            if combining == "full":
                self.bias_spatial = nn.Parameter(torch.empty(oh, ow, **factory))
            else:
                self.bias_row = nn.Parameter(torch.empty(oh, **factory))
                self.bias_col = nn.Parameter(torch.empty(ow, **factory))
        self.register_buffer("reference_kernel", None)  # no convolution it was unshared from
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Bases per ``basis_init``, constant logits (a convolution), zero biases."""
        g = self.geometry
        if self.basis_init == "he_uniform":
            limit = he_uniform_limit(g.in_channels, g.kh, g.kw)
        else:
            limit = glorot_limit(g, self.init)
        c = 1.0 / math.sqrt(self.rank)
        with torch.no_grad():
            self.bases.uniform_(-limit, limit)
            if self.combining == "full":
                self.combining_logits.fill_(c)
            else:
                self.combining_row.fill_(c / 2)
                self.combining_col.fill_(c / 2)
            for p in (self.bias, *self._spatial_bias_params()):
                if p is not None:
                    p.zero_()

    def _spatial_bias_params(self) -> tuple[nn.Parameter, ...]:
        if not self.spatial_bias:
            return ()
        return (self.bias_spatial,) if self.combining == "full" else (self.bias_row, self.bias_col)

    # ---- combining weights and views ----------------------------------------------------------

    def logits(self) -> Tensor:
        """The unnormalised combining weights ``(oh, ow, R)`` (row + column term when factorized)."""
        if self.combining == "full":
            return self.combining_logits
        return self.combining_row[:, None, :] + self.combining_col[None, :, :]

    def combining_weights(self) -> Tensor:
        """``a_r(i, j)`` as ``(oh, ow, R)``, normalised over ``r`` per :attr:`normalize`."""
        return normalize_combining(self.logits(), self.normalize)

    def effective_kernel(self) -> Tensor:
        """Per-position kernels ``(oh, ow, out, in, kh, kw)``: ``sum_r a_r(i, j) K_r`` (a copy)."""
        a = self.combining_weights()
        return torch.einsum("hwr,roikl->hwoikl", a, self.bases)

    def kernel_view(self) -> Tensor:
        """Same as :meth:`effective_kernel` (the layer has no connection mask); the name the
        free-layer finders (``metrics.filter_distance.free_layers``) look for."""
        return self.effective_kernel()

    def bias_view(self) -> Tensor | None:
        """Per-position bias ``(oh, ow, out)``: filter bias plus spatial bias (either may be off), or ``None``."""
        spatial = self._spatial_bias()
        if self.bias is None and spatial is None:
            return None
        oh, ow = self.output_size
        if spatial is None:
            return self.bias.expand(oh, ow, self.out_channels)
        spatial = spatial[:, :, None].expand(oh, ow, self.out_channels)
        return spatial if self.bias is None else self.bias + spatial

    def _spatial_bias(self) -> Tensor | None:
        if not self.spatial_bias:
            return None
        if self.combining == "full":
            return self.bias_spatial
        return self.bias_row[:, None] + self.bias_col[None, :]

    # ---- forward -----------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        g = self.geometry
        if x.dim() != 4 or tuple(x.shape[1:]) != (g.in_channels, g.in_h, g.in_w):
            raise ValueError(
                f"LowRankConv2d expects input (B, {g.in_channels}, {g.in_h}, {g.in_w}), got {tuple(x.shape)}"
            )
        top, bottom, left, right = g.pad
        if (top, left) != (bottom, right):  # 'same' with an even kernel: pad asymmetrically first
            x = F.pad(x, (left, right, top, bottom))
            top = left = 0
        bank = self.bases.reshape(self.rank * self.out_channels, g.in_channels, g.kh, g.kw)
        y = F.conv2d(x, bank, None, self.stride, (top, left), self.dilation)  # (B, R*O, oh, ow)
        a = self.combining_weights().to(y.dtype).permute(2, 0, 1)  # (R, oh, ow)
        if self.rank == 1:
            out = y * a  # (B, O, oh, ow) * (1, oh, ow)
        else:
            # a broadcast multiply and a sum over r: measured faster on CPU than einsum, which
            # permutes the (B, R, O, oh, ow) tensor into a batched matmul of tiny matrices
            y = y.view(y.shape[0], self.rank, self.out_channels, *self.output_size)
            out = (y * a[None, :, None]).sum(1)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)[:, None, None]
        spatial = self._spatial_bias()
        if spatial is not None:
            out = out + spatial.to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, input_size={self.input_size}, "
            f"output_size={self.output_size}, rank={self.rank}, combining={self.combining!r}, "
            f"normalize={self.normalize!r}, bias={self.bias is not None}, spatial_bias={self.spatial_bias}, "
            f"basis_init={self.basis_init!r}"
        )
