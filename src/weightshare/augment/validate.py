"""Range checks of the ``aug`` and ``eval`` config nodes, as the augmenters need them.

:mod:`weightshare.config.validate` checks the whole config at start; these checks repeat
the augmentation part so that :class:`~weightshare.augment.TrainAugmenter` and
:class:`~weightshare.augment.EvalVariants` built outside Hydra (scripts, tests) fail just as
clearly, and add the checks that need the image size (an edge frame must leave an interior).
``cfg`` is anything with the fields as attributes: a dataclass of the schema or a DictConfig.
"""

from __future__ import annotations

import math
from typing import Any

from weightshare.errors import ConfigError

LEVEL_KEYS = ("translate", "rotate", "noise", "edge_noise")
EVAL_VARIANTS = ("clean", "translate", "rotate", "noise", "edge_noise", "quadrant_swap")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_edge_width(key: str, width: Any, image_size: tuple[int, int] | None) -> None:
    """An edge frame is >= 1 pixel and, given the image size, leaves at least one interior pixel."""
    if not _is_int(width) or width < 1:
        raise ConfigError(key, width, "an integer >= 1")
    if image_size is not None:
        h, w = image_size
        side = min(h, w)
        if 2 * width >= side:
            limit = (side - 1) // 2
            raise ConfigError(key, width, f"an integer in [1, {limit}] for {h}x{w} images (< half the side)")


def validate_aug_levels(cfg: Any, image_size: tuple[int, int] | None = None) -> None:
    """Raise ConfigError for an ``aug`` node the training augmenter cannot run.

    Levels (translate, rotate, noise, edge_noise) must be numbers in [0, 1) (the protocol's
    0, 0.1, ..., 0.99); edge_width >= 1 (and < half the side when ``image_size`` is given);
    crop_padding an integer >= 0; hflip and faithful_edge_noise booleans.
    """
    for key in LEVEL_KEYS:
        v = getattr(cfg, key)
        if not (_is_number(v) and 0.0 <= v < 1.0):
            raise ConfigError(f"aug.{key}", v, "a number in [0, 1)")
    check_edge_width("aug.edge_width", cfg.edge_width, image_size)
    if not _is_int(cfg.crop_padding) or cfg.crop_padding < 0:
        raise ConfigError("aug.crop_padding", cfg.crop_padding, "an integer >= 0")
    for key in ("hflip", "faithful_edge_noise"):
        v = getattr(cfg, key)
        if not isinstance(v, bool):
            raise ConfigError(f"aug.{key}", v, "true or false")


def validate_eval_config(cfg: Any, image_size: tuple[int, int] | None = None) -> None:
    """Raise ConfigError for an ``eval`` node: unknown variant names or levels out of range."""
    for name in cfg.variants:
        if name not in EVAL_VARIANTS:
            raise ConfigError("eval.variants", name, f"one of {list(EVAL_VARIANTS)}")
    if not (_is_number(cfg.translate) and 0.0 <= cfg.translate < 1.0):
        raise ConfigError("eval.translate", cfg.translate, "a number in [0, 1)")
    if not (_is_number(cfg.rotate_degrees) and 0.0 <= cfg.rotate_degrees <= 360.0):
        raise ConfigError("eval.rotate_degrees", cfg.rotate_degrees, "degrees in [0, 360]")
    for key in ("noise", "edge_noise"):
        v = getattr(cfg, key)
        if not (_is_number(v) and v >= 0.0):
            raise ConfigError(f"eval.{key}", v, "a standard deviation >= 0")
    check_edge_width("eval.edge_width", cfg.edge_width, image_size)
    if not _is_int(cfg.seed):
        raise ConfigError("eval.seed", cfg.seed, "an integer")
