"""Distances between the filters of a free (locally connected) layer.

These answer the paper's question "does approximate weight sharing emerge?"
(``docs/protocol.md``, section "Filter distance"). A free layer's kernel is read as a grid
of output positions ``(out_h, out_w)``, each holding the whole block of weights used at that
position (all filters, kernel only, no bias), i.e. the kernel the layer computes with
(:func:`filter_kernel`: ``FreeConv2d.effective_kernel()``, connection masks applied, so a
removed weight counts as 0 whatever is stored) with layout
``(out_h, out_w, out_channels, in_channels, kh, kw)``.

Normalisation: the whole kernel is divided by its global Frobenius norm, so distances are
comparable between layers and over training whatever the weights' scale. With independent
random positions each block then has norm about ``1/sqrt(out_h*out_w)`` and two blocks are
about ``sqrt(2/(out_h*out_w))`` apart (0.109 for the MNIST layer 1, 13x13 positions).

Cosine distance is ``1 - cos``; a zero block has no direction, so norms are clamped at
``_EPS`` (as :func:`torch.nn.functional.cosine_similarity` does) and a zero block counts as
orthogonal to everything (cosine distance 1). An all-zero kernel is left unscaled.

Everything is vectorised over positions: a ring of radius ``r`` has ``8r`` offsets and each
offset is one batched operation over all centre positions (two shifted slices of the grid),
so the cost is ``O(8r * positions * block)`` with no Python loop over positions. No library
offers this ring-neighbourhood statistic, hence the hand-written code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from weightshare.errors import ConfigError
from weightshare.layers.common import check_radii, check_radius, filter_kernel

__all__ = [
    "distance_to_mean",
    "distance_to_reference",
    "filter_kernel",
    "free_layers",
    "layer_filter_metrics",
    "ring_distances",
    "ring_offsets",
]

_EPS = 1e-12


def _compute_dtype(kernel: Tensor) -> torch.dtype:
    """float64 stays float64 (exact tests); everything else is measured in float32."""
    return torch.float64 if kernel.dtype == torch.float64 else torch.float32


def _as_grid(kernel: Tensor) -> Tensor:
    """``(out_h, out_w, *filter_dims)`` -> ``(out_h, out_w, D)`` in the compute dtype."""
    if kernel.dim() < 3:
        raise ConfigError("kernel.shape", tuple(kernel.shape), "a tensor (out_h, out_w, *filter_dims) with >= 3 dims")
    grid = kernel.detach().to(_compute_dtype(kernel))
    return grid.reshape(grid.shape[0], grid.shape[1], -1)


def _global_scale(grid: Tensor) -> Tensor:
    """The global Frobenius norm that normalises the kernel (1 for an all-zero kernel).

    Distances are computed on the raw weights and the Euclidean ones divided by this scale at
    the end (cosine is scale-free): the same numbers as normalising first, without a full-size
    normalised copy of the kernel.
    """
    norm = torch.linalg.vector_norm(grid)
    return norm if norm > 0 else torch.ones_like(norm)


def _rows_to_vector(grid: Tensor, vector: Tensor, scratch: Tensor) -> tuple[Tensor, Tensor]:
    """Euclidean and cosine distance of every block of ``grid`` (P, D) to one block ``vector`` (D)."""
    torch.sub(grid, vector, out=scratch)
    euclid = torch.linalg.vector_norm(scratch, dim=-1)
    norms = torch.linalg.vector_norm(grid, dim=-1).clamp_min(_EPS)
    cosine = 1.0 - (grid @ vector) / (norms * torch.linalg.vector_norm(vector).clamp_min(_EPS))
    return euclid, cosine


def ring_offsets(radius: int) -> list[tuple[int, int]]:
    """The ``8 * radius`` offsets ``(dy, dx)`` at Chebyshev distance exactly ``radius``."""
    r = radius
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if max(abs(dy), abs(dx)) == r]


def _check_radius(radius: int, height: int, width: int) -> None:
    check_radius(radius, "radius")
    if height < 2 * radius + 1 or width < 2 * radius + 1:
        raise ConfigError(
            "radius",
            radius,
            f"a radius with at least one position {radius} away from the border of the "
            f"{height}x{width} position map (radius <= {(min(height, width) - 1) // 2})",
        )


def ring_distances(kernel: Tensor, radius: int) -> dict[str, float]:
    """Mean distance between each position's filter block and its ring of radius ``radius``.

    Every position at least ``radius`` away from the border is compared with the ``8*radius``
    positions at Chebyshev distance exactly ``radius``; the result is the mean over all those
    pairs of the Euclidean distance (``"euclid"``) and of ``1 - cosine similarity``
    (``"cosine"``), after normalising the whole kernel by its global Frobenius norm.

    Args:
        kernel: ``(out_h, out_w, *filter_dims)``, e.g. ``FreeConv2d.kernel_view()``.
        radius: ring radius ``r >= 1``; the map needs ``out_h, out_w >= 2r + 1``.

    Raises:
        ConfigError: ``radius < 1`` or no position is ``radius`` away from the border.
    """
    with torch.no_grad():
        grid = _as_grid(kernel)
        height, width = grid.shape[0], grid.shape[1]
        _check_radius(radius, height, width)
        scale = _global_scale(grid)
        r = int(radius)
        norms = torch.linalg.vector_norm(grid, dim=-1).clamp_min(_EPS)
        centre = grid[r : height - r, r : width - r]
        centre_norm = norms[r : height - r, r : width - r]
        # One scratch buffer reused by every offset: allocating a fresh (positions x block)
        # temporary per offset costs more than the arithmetic on CPU (page faults).
        scratch = torch.empty_like(centre)
        euclid_sum = grid.new_zeros(())
        cosine_sum = grid.new_zeros(())
        for dy, dx in ring_offsets(r):
            ys, xs = slice(r + dy, height - r + dy), slice(r + dx, width - r + dx)
            neighbour = grid[ys, xs]
            torch.sub(centre, neighbour, out=scratch)
            euclid_sum += torch.linalg.vector_norm(scratch, dim=-1).sum()
            torch.mul(centre, neighbour, out=scratch)
            cos = scratch.sum(dim=-1) / (centre_norm * norms[ys, xs])
            cosine_sum += (1.0 - cos).sum()
        n_pairs = 8 * r * centre.shape[0] * centre.shape[1]
        return {"euclid": float(euclid_sum / (n_pairs * scale)), "cosine": float(cosine_sum / n_pairs)}


def distance_to_mean(kernel: Tensor) -> dict[str, float]:
    """Mean distance of every position's block to the mean block over positions.

    How far the layer is from perfect sharing: 0 when every position holds the same filters.
    Same global normalisation as :func:`ring_distances` (the mean is taken after it).
    """
    with torch.no_grad():
        grid = _as_grid(kernel)
        grid = grid.reshape(-1, grid.shape[-1])
        euclid, cosine = _rows_to_vector(grid, grid.mean(dim=0), torch.empty_like(grid))
        return {"euclid": float(euclid.mean() / _global_scale(grid)), "cosine": float(cosine.mean())}


def distance_to_reference(kernel: Tensor, reference: Tensor) -> dict[str, float]:
    """Mean distance of every position's block to a shared reference filter block.

    ``reference`` is ``(out_channels, in_channels, kh, kw)``, e.g. the convolution kernel a
    free layer was converted from (``FreeConv2d.reference_kernel``). Normalisation: the kernel
    is divided by its global norm and the reference by the norm it would have if broadcast to
    every position (``sqrt(positions) * ||reference||``). Both are then "a kernel of unit
    global norm", so a freshly converted layer (every position equal to the reference) is at
    distance 0, and the Euclidean values are on the same scale as the ring distances.

    That normalisation divides out the kernel's overall scale: a layer whose every position
    grows uniformly (``W_p = c * W_ref``) still reads ``euclid = 0``. ``euclid_raw`` keeps the
    scale: the mean over positions ``p`` of ``||W_p - W_ref||_F / ||W_ref||_F``, i.e. each
    position's distance relative to the reference filter block's own norm (``c - 1`` for the
    uniform growth above, 0 for a fresh conversion, about ``||W_p|| / ||W_ref||`` once the
    positions are unrelated to the reference). An all-zero reference leaves it unscaled (the
    mean absolute distance ``||W_p||``).

    Returns:
        ``{"euclid", "cosine", "euclid_raw"}``.
    """
    with torch.no_grad():
        grid = _as_grid(kernel)
        height, width, block = grid.shape
        if tuple(reference.shape) != tuple(kernel.shape[2:]):
            raise ConfigError(
                "reference.shape", tuple(reference.shape), f"the filter block shape {tuple(kernel.shape[2:])}"
            )
        scale = _global_scale(grid)
        grid = grid.reshape(-1, block)
        ref = reference.detach().to(device=grid.device, dtype=grid.dtype).reshape(block)
        scratch = torch.empty_like(grid)
        ref_block_norm = torch.linalg.vector_norm(ref)
        torch.sub(grid, ref, out=scratch)
        raw = torch.linalg.vector_norm(scratch, dim=-1).mean()
        if ref_block_norm > 0:
            raw = raw / ref_block_norm
        ref_norm = ref_block_norm * (height * width) ** 0.5
        if ref_norm > 0:
            ref = ref / ref_norm
        euclid, cosine = _rows_to_vector(grid / scale, ref, scratch)
        return {"euclid": float(euclid.mean()), "cosine": float(cosine.mean()), "euclid_raw": float(raw)}


def _has_kernel_view(module: nn.Module) -> bool:
    return callable(getattr(module, "kernel_view", None))


def free_layers(module: nn.Module, layers: Iterable[str] | None = None) -> list[tuple[str, nn.Module]]:
    """The free layers of ``module`` (modules with a ``kernel_view()`` method), by module name.

    A free layer nested inside another (e.g. a tiled layer built on a free one) is not listed
    twice: only the outermost is. The root module itself, if free, is named ``"layer"``.

    Args:
        layers: keep only these names. A name that is not a module of ``module`` at all is a
            typo and raises; a name of an ordinary (shared) layer, e.g. ``conv1`` of a CNN, is
            skipped, so one ``layers`` setting serves a sweep over CNNs and FCNs.

    Raises:
        ConfigError: a name in ``layers`` is not a submodule of ``module``.
    """
    found: list[tuple[str, nn.Module]] = []
    raw_names: list[str] = []
    all_names: set[str] = set()
    for name, sub in module.named_modules():
        if name:
            all_names.add(name)
        if not _has_kernel_view(sub):
            continue
        if any(p == "" or name.startswith(p + ".") for p in raw_names):
            continue  # nested inside a free layer already listed
        raw_names.append(name)
        found.append((name or "layer", sub))
    if "" in raw_names:
        all_names.add("layer")
    if layers is None:
        return found
    wanted = list(layers)
    unknown = [n for n in wanted if n not in all_names]
    if unknown:
        names = sorted(all_names)
        raise ConfigError("layers", unknown, f"module names of the network, e.g. {names[:12]}")
    return [(n, m) for n, m in found if n in wanted]


def layer_filter_metrics(
    module: nn.Module, radii: Sequence[int] = (1, 4), layers: Iterable[str] | None = None
) -> dict[str, float]:
    """Filter distances of every free layer of ``module``, as a flat dict of metric names.

    Keys per layer ``L`` (module name, e.g. ``conv1``): ``fd/L/r<r>/euclid``,
    ``fd/L/r<r>/cosine`` for each radius, ``fd/L/to_mean/euclid|cosine``, and, when the layer
    has a non-None ``reference_kernel`` (converted from a convolution),
    ``fd/L/to_ref/euclid|cosine`` (globally normalised, scale-free) and
    ``fd/L/to_ref/euclid_raw`` (mean over positions of ``||W_p - W_ref|| / ||W_ref||``, which
    sees a uniform growth of the weights; see :func:`distance_to_reference`).

    Every layer is read through :func:`filter_kernel`, i.e. with its connection mask applied.

    A radius that does not fit a layer's position map (it needs ``2r + 1`` positions per side)
    is skipped for that layer only: with the paper's MNIST maps 13x13, 6x6, 4x4 the radius 4
    exists only for layer 1, radius 1 for all three; CIFAR-10's 14x14, 5x5, 3x3 likewise. A
    network without free layers (a CNN) gives an empty dict. Computed under ``no_grad`` in
    float32 on the kernel's device.

    Raises:
        ConfigError: a radius below 1, or an unknown layer name (see :func:`free_layers`).
    """
    radii = check_radii(radii, "radii", allow_empty=True)
    out: dict[str, float] = {}
    with torch.no_grad():
        for name, layer in free_layers(module, layers):
            view = filter_kernel(layer)
            # one contiguous compute-dtype copy shared by every metric of the layer (the
            # kernel is often a permuted view, which each reshape would copy again)
            kernel = view.detach().to(_compute_dtype(view)).contiguous()
            height, width = kernel.shape[0], kernel.shape[1]
            for r in radii:
                if height >= 2 * r + 1 and width >= 2 * r + 1:
                    for stat, value in ring_distances(kernel, r).items():
                        out[f"fd/{name}/r{r}/{stat}"] = value
            for stat, value in distance_to_mean(kernel).items():
                out[f"fd/{name}/to_mean/{stat}"] = value
            reference = getattr(layer, "reference_kernel", None)
            if reference is not None:
                for stat, value in distance_to_reference(kernel, reference).items():
                    out[f"fd/{name}/to_ref/{stat}"] = value
    return out
