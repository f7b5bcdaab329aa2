"""Range checks of a composed config, run at start before any data is touched.

The typed schema (:mod:`weightshare.config.schema`) already rejects unknown keys and wrong
types; these checks reject values of the right type that make no sense (a negative learning
rate, an augmentation level of 1.5, fold 7 of 5). Each failure is one
:class:`~weightshare.errors.ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from weightshare.augment.validate import EVAL_VARIANTS, LEVEL_KEYS
from weightshare.config.checks import _in_range, _is_int, _one_of, _positive_int, _require, _subset
from weightshare.config.geometry import check_geometry
from weightshare.config.schema import (
    OPTIMIZERS,
    PROGRESS_BARS,
    SCHEDULERS,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainConfig,
)
from weightshare.config.trainer_checks import SEED_MAX, check_trainer
from weightshare.data.registry import DATASETS, check_reader_options
from weightshare.data.splits import SPLITS
from weightshare.errors import ConfigError, did_you_mean
from weightshare.layers.free_conv import CONNECTIVITY_MODES, IMPL_NAMES, INIT_NAMES
from weightshare.layers.lowrank_conv import BASIS_INITS, COMBINING_MODES
from weightshare.layers.share_penalty import PENALTY_KINDS
from weightshare.loggers import ALLOWED_LOGGERS
from weightshare.models.registry import MODEL_NAMES, names_of
from weightshare.models.resnet import ARCHS as RESNET_ARCHS

# every list of allowed values is owned by the component that implements the values
PAPER_MODELS = names_of("paper")
RESNET_MODELS = names_of("resnet")
FCN_INITS = INIT_NAMES
LOGGERS = ALLOWED_LOGGERS
BUDGETS = ("small", "full")


def _check_data(d: DictConfig) -> None:
    _one_of("data.name", d.name, DATASETS)
    _one_of("data.split", d.split, SPLITS)
    _positive_int("data.n_folds", d.n_folds, 2)
    ok = isinstance(d.fold, int) and 0 <= d.fold < d.n_folds
    _require(ok, "data.fold", d.fold, f"an integer in [0, {d.n_folds - 1}] (data.n_folds={d.n_folds})")
    _positive_int("data.batch_size", d.batch_size)
    for key in ("eval_batch_size", "limit_train", "limit_val"):
        if d[key] is not None:
            _positive_int(f"data.{key}", d[key])
    check_reader_options(d.name, d.options)
    _check_reader_values(d.name, d.options)
    if d.split == "standard":
        allowed = "0 with data.split=standard (the official test set is the validation set)"
        _require(d.fold == 0, "data.fold", d.fold, allowed)
    _positive_int("data.max_epochs", d.max_epochs)
    _positive_int("data.patience", d.patience, 0)
    _positive_int("data.search_max_epochs", d.search_max_epochs)
    _positive_int("data.search_patience", d.search_patience, 0)
    _in_range("data.lr", d.lr, 0.0, 10.0, lo_open=True, hi_open=False)


def _check_reader_values(name: str, options: Any) -> None:
    """The reader options' ranges, so a bad one fails before the data is read (the readers repeat them)."""
    from weightshare.data.synthetic import MIN_IMAGE_SIZE

    o = dict(options or {})
    if "image_size" in o:
        least = MIN_IMAGE_SIZE if name == "synthetic" else 8
        _positive_int("data.options.image_size", o["image_size"], least)
    if "size" in o:
        _positive_int("data.options.size", o["size"])
    if "seed" in o:
        _positive_int("data.options.seed", o["seed"], 0)
    if "noise_std" in o:
        _in_range("data.options.noise_std", o["noise_std"], 0.0, math.inf)


def _check_model(m: DictConfig) -> None:
    _one_of("model.name", m.name, MODEL_NAMES)
    if m.name in PAPER_MODELS:
        _one_of("model.arch", m.arch, ("paper",))
        _require(m.depth in (2, 3), "model.depth", m.depth, "2 or 3 for the paper networks")
    else:
        _one_of("model.arch", m.arch, RESNET_ARCHS)
        _positive_int("model.depth", m.depth, 8)
        _positive_int("model.widen_factor", m.widen_factor)
    _positive_int("model.hidden", m.hidden)
    _in_range("model.connectivity", m.connectivity, 0.0, 1.0)
    _one_of("model.connectivity_mode", m.connectivity_mode, CONNECTIVITY_MODES)
    _one_of("model.fcn_init", m.fcn_init, FCN_INITS)
    if m.share_tile is not None:
        _positive_int("model.share_tile", m.share_tile)
        _require(m.name == "fcn", "model.share_tile", m.share_tile, "null unless model=fcn")
        _require(m.connectivity == 0, "model.connectivity", m.connectivity, "0 when model.share_tile is set")
    _in_range("model.share_penalty", m.share_penalty, 0.0, math.inf)
    _positive_int("model.penalty_radius", m.penalty_radius)
    if m.share_penalty > 0:
        _require(m.name == "fcn", "model.share_penalty", m.share_penalty, "0 unless model=fcn")
    if m.connectivity > 0:
        _require(m.name == "fcn", "model.connectivity", m.connectivity, "0 unless model=fcn")
    if m.init_from is not None:
        _require(m.name == "fcn", "model.init_from", m.init_from, "null unless model=fcn (a CNN checkpoint to unshare)")
        _require(m.share_tile is None, "model.share_tile", m.share_tile, "null when model.init_from is set")
    _one_of("model.impl", m.impl, IMPL_NAMES)
    _check_unused(m, "model", m.name, MODEL_OPTION_USERS, _MODEL_DEFAULTS)


#: options of one model / optimizer / scheduler that the others would silently ignore:
#: the option may differ from its schema default only when ``name`` is one of these
MODEL_OPTION_USERS: dict[str, tuple[str, ...]] = {
    "fcn_init": ("fcn", "lowrank"),
    "connectivity_mode": ("fcn",),
    "impl": ("fcn",),
    "hidden": PAPER_MODELS,
    "widen_factor": RESNET_MODELS,
}
OPTIMIZER_OPTION_USERS: dict[str, tuple[str, ...]] = {
    "betas": ("adam", "adamw"),
    "eps": ("adam", "adamw"),
    "fused": ("adam", "adamw"),
    "momentum": ("sgd",),
    "nesterov": ("sgd",),
}
SCHEDULER_OPTION_USERS: dict[str, tuple[str, ...]] = {"gamma": ("multistep",)}
_MODEL_DEFAULTS = ModelConfig()
_OPTIMIZER_DEFAULTS = OptimizerConfig()
_SCHEDULER_DEFAULTS = SchedulerConfig()


def _check_unused(node: DictConfig, group: str, name: str, users: dict[str, tuple[str, ...]], defaults: Any) -> None:
    """An option set away from its default on a ``group`` choice that does not read it is an error."""
    for key, names in users.items():
        if name in names or key not in node:
            continue
        value, default = node[key], getattr(defaults, key)
        value = list(value) if OmegaConf.is_list(value) else value
        if value != default:
            shown = names[0] if len(names) == 1 else "|".join(names)
            allowed = f"{default!r} (the default): {group}={name} does not use it, only {group}={shown}"
            raise ConfigError(f"{group}.{key}", value, allowed)


def _check_optim(o: DictConfig, s: DictConfig) -> None:
    _one_of("optimizer.name", o.name, OPTIMIZERS)
    _in_range("optimizer.lr", o.lr, 0.0, 10.0, lo_open=True, hi_open=False)
    _in_range("optimizer.weight_decay", o.weight_decay, 0.0, 1.0)
    _in_range("optimizer.momentum", o.momentum, 0.0, 1.0)
    _in_range("optimizer.eps", o.eps, 0.0, 1.0, lo_open=True)
    _require(len(o.betas) == 2, "optimizer.betas", list(o.betas), "two numbers in [0, 1)")
    for i, b in enumerate(o.betas):
        _in_range(f"optimizer.betas[{i}]", b, 0.0, 1.0)
    _one_of("scheduler.name", s.name, SCHEDULERS)
    _in_range("scheduler.gamma", s.gamma, 0.0, 1.0, lo_open=True, hi_open=False)
    for i, mstone in enumerate(s.milestones):
        _positive_int(f"scheduler.milestones[{i}]", mstone)
    _positive_int("scheduler.warmup_epochs", s.warmup_epochs, 0)
    # knobs of one optimizer or schedule set on another would be silently ignored
    _check_unused(o, "optimizer", o.name, OPTIMIZER_OPTION_USERS, _OPTIMIZER_DEFAULTS)
    _check_unused(s, "scheduler", s.name, SCHEDULER_OPTION_USERS, _SCHEDULER_DEFAULTS)
    if s.name != "cosine":
        _require(s.warmup_epochs == 0, "scheduler.warmup_epochs", s.warmup_epochs, "0 unless scheduler=cosine")
    if s.name != "multistep":
        _require(len(s.milestones) == 0, "scheduler.milestones", list(s.milestones), "[] unless scheduler=multistep")


def _check_aug(a: DictConfig, e: DictConfig) -> None:
    for key in LEVEL_KEYS:
        _in_range(f"aug.{key}", a[key], 0.0, 1.0)
    _positive_int("aug.edge_width", a.edge_width)
    _positive_int("aug.crop_padding", a.crop_padding, 0)
    _subset("eval.variants", e.variants, EVAL_VARIANTS)
    _require(len(e.variants) > 0, "eval.variants", list(e.variants), "at least one variant name")
    _in_range("eval.translate", e.translate, 0.0, 1.0)
    _in_range("eval.rotate_degrees", e.rotate_degrees, 0.0, 360.0, hi_open=False)
    _in_range("eval.noise", e.noise, 0.0, math.inf)
    _in_range("eval.edge_noise", e.edge_noise, 0.0, math.inf)
    _positive_int("eval.edge_width", e.edge_width)


def monitorable(variants: Iterable[str]) -> list[str]:
    """Metric names early stopping and checkpoints can follow (logged every validation epoch)."""
    names = ["val/acc", "val/loss", "val/acc_best", "train/acc", "train/loss"]
    for v in dict.fromkeys(["clean", *variants]):
        names += [f"val/{v}/acc", f"val/{v}/loss"]
    return names


def _check_callbacks(c: DictConfig, variants: Iterable[str]) -> None:
    allowed = monitorable(variants)
    for key in ("early_stopping", "checkpoint"):
        _require(c[key].monitor in allowed, f"callbacks.{key}.monitor", c[key].monitor, f"one of {allowed}")
    _positive_int("callbacks.early_stopping.patience", c.early_stopping.patience, 0)
    _in_range("callbacks.early_stopping.min_delta", c.early_stopping.min_delta, 0.0, math.inf)
    _one_of("callbacks.early_stopping.mode", c.early_stopping.mode, ("min", "max"))
    _one_of("callbacks.checkpoint.mode", c.checkpoint.mode, ("min", "max"))
    for i, r in enumerate(c.filter_metrics.radii):
        _positive_int(f"callbacks.filter_metrics.radii[{i}]", r)
    _positive_int("callbacks.filter_metrics.every_n_epochs", c.filter_metrics.every_n_epochs)
    for i, ep in enumerate(c.filter_images.epochs):
        _positive_int(f"callbacks.filter_images.epochs[{i}]", ep, -1)
    _positive_int("callbacks.filter_images.filter_index", c.filter_images.filter_index, 0)
    _one_of("callbacks.progress_bar", c.progress_bar, PROGRESS_BARS)


def _check_known_keys(node: Any, schema: type, path: str) -> None:
    """Every key of ``node`` is a field of the dataclass ``schema`` (recursively).

    Hydra rejects ``data.bogus=1``, but ``+data.bogus=1`` (the append syntax) adds the key to a
    structured node without complaint; a misspelled knob must never be silently ignored.
    """
    fields = typing.get_type_hints(schema)  # resolves the string annotations of the schema module
    for key in node:
        name = f"{path}.{key}" if path else str(key)
        if key not in fields:
            near = did_you_mean(str(key), fields, prefix=f"{path}." if path else "")
            raise ConfigError(
                name,
                OmegaConf.select(node, str(key), throw_on_missing=False),
                f"a key of {path or 'the config'}{near} (its keys: {', '.join(sorted(fields))})",
            )
        if dataclasses.is_dataclass(fields[key]) and isinstance(node[key], DictConfig):
            _check_known_keys(node[key], fields[key], name)


def _check_finite(cfg: DictConfig) -> None:
    """NaN or infinity anywhere a number is expected (free-form nodes such as data.options too)."""

    from omegaconf import DictConfig as _Dict
    from omegaconf import ListConfig
    from omegaconf.errors import InterpolationResolutionError

    def value(container: Any, key: Any) -> Any:
        try:
            return container[key]
        except InterpolationResolutionError as exc:
            # ${hydra:...} outside a Hydra run (a config composed by load_config): the output
            # locations, never a number
            if "HydraConfig was not set" in str(exc):
                return None
            raise

    def walk(node: Any, path: str) -> None:
        if isinstance(node, _Dict):
            for k in node:
                walk(value(node, k), f"{path}.{k}" if path else str(k))
        elif isinstance(node, ListConfig):
            for i in range(len(node)):
                walk(value(node, i), f"{path}[{i}]")
        elif isinstance(node, float) and not math.isfinite(node):
            raise ConfigError(path, node, "a finite number (NaN and infinity are not values of any setting)")

    walk(cfg, "")


def _check_top(cfg: DictConfig) -> None:
    ok = _is_int(cfg.seed) and 0 <= cfg.seed <= SEED_MAX
    _require(ok, "seed", cfg.seed, f"an integer in [0, {SEED_MAX}] (the random generators' range)")
    _one_of("budget", cfg.budget, BUDGETS)
    _subset("logger.names", cfg.logger.names, LOGGERS)
    if cfg.threads is not None:
        _positive_int("threads", cfg.threads)
    _one_of("float32_matmul_precision", cfg.float32_matmul_precision, ("highest", "high", "medium"))
    _positive_int("divergence.cnn_epochs", cfg.divergence.cnn_epochs, 0)
    if cfg.divergence.cnn_epochs > 0:
        _require(
            cfg.model.name == "fcn" and cfg.model.init_from is None,
            "divergence.cnn_epochs",
            cfg.divergence.cnn_epochs,
            "0 unless model=fcn without model.init_from",
        )
    if cfg.ckpt_path is not None:
        _require(
            isinstance(cfg.ckpt_path, str) and cfg.ckpt_path != "",
            "ckpt_path",
            cfg.ckpt_path,
            "'last' or the path of a checkpoint file",
        )


# ---------------------------------------------------------------- the sharing spectrum (issue #13)
# Low-rank local connectivity, dynamic weight sharing and the penalty kind. Every option is
# rejected on a model that would ignore it.
_DEFAULT_PENALTY_KIND = PENALTY_KINDS[0]


def _position_maps(cfg: DictConfig) -> list[tuple[int, int]]:
    """The ``(out_h, out_w)`` of each conv layer of the paper network this config builds."""
    from weightshare.data.dataset import DataInfo
    from weightshare.models.paper_nets import position_maps

    d = cfg.data
    size = {"mnist": 28, "cifar10": 32}.get(d.name) or int((d.options or {}).get("image_size", 28))
    return position_maps(DataInfo(d.name, 1, size, size, 10), cfg.model.depth)


def _check_spectrum(cfg: DictConfig) -> None:
    m = cfg.model
    if m.name == "lowrank":
        maps = _position_maps(cfg)
        fewest = min(h * w for h, w in maps)
        ok = isinstance(m.rank, int) and not isinstance(m.rank, bool) and 1 <= m.rank <= fewest
        _require(ok, "model.rank", m.rank, f"an integer in [1, {fewest}] (positions of the smallest map {maps})")
        _one_of("model.combining", m.combining, COMBINING_MODES)
        _one_of("model.basis_init", m.basis_init, BASIS_INITS)
        for key in ("filter_bias", "spatial_bias"):
            _require(isinstance(m[key], bool), f"model.{key}", m[key], "true or false")
    else:
        for key in ("rank", "combining", "basis_init", "filter_bias", "spatial_bias"):
            _require(m[key] is None, f"model.{key}", m[key], "null unless model=lowrank")
    _one_of("model.share_penalty_kind", m.share_penalty_kind, PENALTY_KINDS)
    if m.share_penalty_kind != _DEFAULT_PENALTY_KIND:
        _require(
            m.share_penalty > 0,
            "model.share_penalty_kind",
            m.share_penalty_kind,
            "l2_neighbours unless model.share_penalty > 0",
        )
        _require(
            m.penalty_radius == 1,
            "model.penalty_radius",
            m.penalty_radius,
            "1 with model.share_penalty_kind=l1_all_pairs (all pairs have no radius)",
        )
    ds = m.dynamic_sharing
    if ds.every is None:
        _require(
            ds.strength == 1.0,
            "model.dynamic_sharing.strength",
            ds.strength,
            "1.0 unless model.dynamic_sharing.every is set",
        )
        _require(
            ds.radius is None,
            "model.dynamic_sharing.radius",
            ds.radius,
            "null unless model.dynamic_sharing.every is set",
        )
        return
    _positive_int("model.dynamic_sharing.every", ds.every)
    _in_range("model.dynamic_sharing.strength", ds.strength, 0.0, 1.0, lo_open=True, hi_open=False)
    users = "model=fcn (without share_tile or init_from) or model=lowrank with model.combining=full"
    ok = (m.name == "fcn" and m.share_tile is None and m.init_from is None) or (
        m.name == "lowrank" and m.combining == "full"
    )
    _require(ok, "model.dynamic_sharing.every", ds.every, f"null unless {users}")
    if ds.radius is not None:
        largest = max(max(h, w) for h, w in _position_maps(cfg))
        ok = isinstance(ds.radius, int) and not isinstance(ds.radius, bool) and 1 <= ds.radius <= largest - 1
        allowed = f"null (every position) or an integer in [1, {largest - 1}] (the largest map is {largest} wide)"
        _require(ok, "model.dynamic_sharing.radius", ds.radius, allowed)


CHECKS: tuple[Callable[[DictConfig], None], ...] = (
    lambda c: _check_known_keys(c, TrainConfig, ""),
    _check_finite,
    lambda c: _check_data(c.data),
    lambda c: _check_model(c.model),
    lambda c: _check_optim(c.optimizer, c.scheduler),
    lambda c: _check_aug(c.aug, c.eval),
    lambda c: _check_callbacks(c.callbacks, c.eval.variants),
    lambda c: check_trainer(c.trainer),
    _check_top,
    _check_spectrum,
    check_geometry,  # last: it builds the network (on the meta device) from checked values
)


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first out-of-range value; resolves interpolations.

    Interpolation errors (``${data.lr}`` pointing nowhere) and type errors that only show on
    resolution are turned into ConfigErrors too.
    """
    from omegaconf.errors import OmegaConfBaseException

    try:
        for check in CHECKS:
            check(cfg)
    except OmegaConfBaseException as exc:  # a bad interpolation or a missing mandatory value
        key = getattr(exc, "full_key", None) or "config"
        raise ConfigError(str(key), getattr(exc, "msg", str(exc)), "a resolvable value") from None


def resolved_container(cfg: DictConfig) -> dict:
    """The config as a plain dict with interpolations resolved (for results.json and W&B)."""
    out = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(out, dict)
    out.pop("defaults", None)
    return out


__all__ = ["EVAL_VARIANTS", "resolved_container", "validate_config"]
