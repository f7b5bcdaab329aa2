"""The training augmenter and the evaluation variants, as the data module calls them.

Both work on a whole (B, C, H, W) float batch where it lives (CPU or GPU): no per-sample
Python, no host round trip.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from weightshare.errors import ConfigError

from ._util import check_batch
from .geometry import affine_batch, random_affine, random_crop, random_hflip
from .keyed import keyed_affine_draws, keyed_train_augment
from .keyed_rng import STREAMS, SampleKeys, eval_key
from .noise import edge_noise, frame_mask, gaussian_noise
from .quadrant import quadrant_swap
from .validate import EVAL_VARIANTS, check_edge_width, validate_aug_levels, validate_eval_config


class TrainAugmenter:
    """Applies the ``aug`` config to a training batch, in this order:

    1. translate and rotate combined: one affine per image (shift uniform in +-f*W, +-f*H;
       angle uniform in +-f*360 degrees), ONE bilinear resampling with nearest-edge fill,
       like Keras' combined transform matrix (draws: shifts, then angles);
    2. random crop after zero padding (``crop_padding``), then horizontal flip (``hflip``):
       the ResNet recipe, off in the paper's protocol;
    3. Gaussian noise (std = ``noise``), not clipped;
    4. edge noise (std = ``edge_noise``) on the ``edge_width`` frame, or the published
       code's batch-axis pattern with ``faithful_edge_noise``.

    Noise comes after the geometry so the noise itself is not interpolated or moved. With
    every augmentation off, :attr:`active` is False and a call returns the batch itself.
    """

    def __init__(self, cfg: Any) -> None:
        validate_aug_levels(cfg)
        self.translate = float(cfg.translate)
        self.rotate = float(cfg.rotate)
        self.noise = float(cfg.noise)
        self.edge_noise = float(cfg.edge_noise)
        self.edge_width = int(cfg.edge_width)
        self.faithful_edge_noise = bool(cfg.faithful_edge_noise)
        self.crop_padding = int(cfg.crop_padding)
        self.hflip = bool(cfg.hflip)

    @property
    def active(self) -> bool:
        """True when at least one augmentation changes the batch."""
        return (
            self.translate > 0
            or self.rotate > 0
            or self.noise > 0
            or self.edge_noise > 0
            or self.crop_padding > 0
            or self.hflip
        )

    def __call__(self, x: torch.Tensor, generator: torch.Generator | SampleKeys | None) -> torch.Tensor:
        """Augment a float batch in [0, 1].

        ``generator``: per-sample :class:`SampleKeys` (what the data module passes: each
        sample's draws depend only on its key, see :mod:`.keyed`), or a ``torch.Generator``
        on ``x.device`` (draws in the documented order, for scripts and tests).
        """
        if not self.active:
            return x
        check_batch(x)
        if self.edge_noise > 0:
            check_edge_width("aug.edge_width", self.edge_width, tuple(x.shape[-2:]))
        if isinstance(generator, SampleKeys):
            return keyed_train_augment(x, generator, **self.settings())
        x = random_affine(x, self.translate, self.rotate * 360.0, generator)
        if self.crop_padding > 0:
            x = random_crop(x, self.crop_padding, generator)
        if self.hflip:
            x = random_hflip(x, generator)
        if self.noise > 0:
            x = gaussian_noise(x, self.noise, generator)
        if self.edge_noise > 0:
            x = edge_noise(x, self.edge_noise, self.edge_width, generator, faithful=self.faithful_edge_noise)
        return x

    def settings(self) -> dict[str, Any]:
        """The keyword arguments of :func:`keyed_train_augment` for this config."""
        return {
            "translate": self.translate,
            "rotate": self.rotate,
            "noise": self.noise,
            "edge_noise": self.edge_noise,
            "edge_width": self.edge_width,
            "faithful_edge_noise": self.faithful_edge_noise,
            "crop_padding": self.crop_padding,
            "hflip": self.hflip,
        }

    def __repr__(self) -> str:
        return (
            f"TrainAugmenter(translate={self.translate}, rotate={self.rotate}, noise={self.noise}, "
            f"edge_noise={self.edge_noise}, edge_width={self.edge_width}, "
            f"faithful_edge_noise={self.faithful_edge_noise}, crop_padding={self.crop_padding}, "
            f"hflip={self.hflip})"
        )


def eval_seed(seed: int, batch_index: int, variant: str) -> int:
    """A 63-bit seed from (eval seed, batch index, variant name), stable across runs and machines.

    Hashing (rather than ``seed + batch_index``) keeps the streams of neighbouring seeds and
    batches unrelated, and the variant name in the key keeps e.g. the translated images the
    same whether or not the other variants are enabled.
    """
    digest = hashlib.sha256(f"{seed}/{batch_index}/{variant}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class EvalVariants:
    """Builds the evaluation variants of a validation batch (protocol: clean, translate 25%,
    rotate +-45 degrees, noise 0.15, edge noise 0.15, quadrant swap).

    The perturbation of a sample is keyed by ``(cfg.seed, variant, sample index)`` through
    :class:`SampleKeys` (:func:`eval_key`): every model, every epoch, every evaluation batch
    size and every member of a pack scores a sample on the same perturbed image, on any
    device. The variant name in the key keeps e.g. the translated images the same whether
    or not the other variants are enabled.
    """

    def __init__(self, cfg: Any) -> None:
        validate_eval_config(cfg)
        self.seed = int(cfg.seed)
        self.translate = float(cfg.translate)
        self.rotate_degrees = float(cfg.rotate_degrees)
        self.noise = float(cfg.noise)
        self.edge_noise = float(cfg.edge_noise)
        self.edge_width = int(cfg.edge_width)
        names = ["clean"] + [str(v) for v in cfg.variants if v != "clean"]
        self.names: list[str] = list(dict.fromkeys(names))  # ordered, no duplicates

    def keys(self, index: torch.Tensor, variant: str) -> SampleKeys:
        """The per-sample keys of ``variant`` for the samples ``index``."""
        return SampleKeys(eval_key(self.seed, variant), index)

    def __call__(self, x: torch.Tensor, index: torch.Tensor | int) -> dict[str, torch.Tensor]:
        """``{"clean": x, <variant>: perturbed x, ...}`` in the configured order.

        ``index``: the dataset indices (B,) of the samples; an int ``i`` means the samples
        ``i, i+1, ...`` (scripts that perturb a batch without a dataset behind it).
        """
        check_batch(x)
        B, _, H, W = x.shape
        if isinstance(index, int):
            index = torch.arange(index, index + B, device=x.device)
        index = index.to(x.device)
        if "edge_noise" in self.names:
            check_edge_width("eval.edge_width", self.edge_width, (H, W))
        cdt = x.dtype if x.dtype == torch.float64 else torch.float32
        out: dict[str, torch.Tensor] = {}
        for name in self.names:
            if name == "clean":
                out[name] = x
                continue
            if name == "quadrant_swap":
                out[name] = quadrant_swap(x)
                continue
            k = self.keys(index, name)
            if name == "translate":
                shifts, _ = keyed_affine_draws(k, H, W, self.translate, 0.0)
                out[name] = affine_batch(x, None, shifts)
            elif name == "rotate":
                _, angles = keyed_affine_draws(k, H, W, 0.0, self.rotate_degrees)
                out[name] = affine_batch(x, angles, None)
            elif name == "noise":
                z = k.normal(STREAMS["noise"], x[0].numel(), cdt).view(x.shape)
                out[name] = (x.to(cdt) + z * self.noise).to(x.dtype)
            elif name == "edge_noise":
                z = k.normal(STREAMS["edge_noise"], x[0].numel(), cdt).view(x.shape)
                mask = frame_mask(H, W, self.edge_width, x.device).to(cdt) * self.edge_noise
                out[name] = (x.to(cdt) + z * mask).to(x.dtype)
            else:  # validated in __init__; kept so a new name cannot pass silently
                raise ConfigError("eval.variants", name, f"one of {list(EVAL_VARIANTS)}")
        return out

    def __repr__(self) -> str:
        return f"EvalVariants(names={self.names}, seed={self.seed})"


__all__ = ["EvalVariants", "TrainAugmenter", "eval_seed"]
