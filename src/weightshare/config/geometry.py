"""Checks that need the data's or the network's geometry, run from the config before any data is read.

Why: the image size, the number of rows, the layer names, their channels and position maps
decide whether ``callbacks.filter_images.filter_index``, ``callbacks.filter_metrics.layers``
and ``radii``, the edge widths and ``data.n_folds`` make sense. Reading them from the built
network after the data was loaded (or, for the edge widths, after training began) left a
failed run directory behind. Here the data geometry comes from the dataset's fixed shape (or
its reader options), and the network is built on PyTorch's ``meta`` device: every layer's
shape and every construction check, no memory allocated, a few milliseconds.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from weightshare.errors import ConfigError

__all__ = ["DataShape", "check_geometry", "data_shape", "meta_network", "parameter_count"]


class DataShape:
    """What the config says about a dataset without reading it: image geometry and row counts."""

    def __init__(self, name: str, channels: int, size: int, rows: int) -> None:
        from weightshare.data.dataset import DataInfo

        self.info = DataInfo(name, channels, size, size, 10)
        self.rows = rows


#: ``(channels, side, rows)`` of the datasets whose files fix them
_FIXED = {"mnist": (1, 28, 70_000), "cifar10": (3, 32, 60_000)}


def data_shape(d: DictConfig) -> DataShape:
    """The geometry of ``data.name`` as configured (digits and synthetic take ``image_size``)."""
    import inspect

    from weightshare.data.registry import DATASETS

    if d.name in _FIXED:
        channels, side, rows = _FIXED[d.name]
        return DataShape(d.name, channels, side, rows)
    params = inspect.signature(DATASETS[d.name]).parameters
    options = dict(d.options or {})
    side = int(options.get("image_size", params["image_size"].default))
    if d.name == "digits":
        from weightshare.data.digits import DIGITS_N_TRAIN

        rows = DIGITS_N_TRAIN + 359  # sklearn's 1797 digits
    else:
        rows = int(options.get("size", params["size"].default))
    return DataShape(d.name, 1, side, rows)


@functools.lru_cache(maxsize=4)
def _meta_network(model_json: str, info_json: str) -> torch.nn.Module:
    from weightshare.data.dataset import DataInfo
    from weightshare.models.registry import model_entry

    cfg = OmegaConf.create(json.loads(model_json))
    with torch.device("meta"):
        return model_entry(cfg.name).build(cfg, DataInfo(**json.loads(info_json)))


def meta_network(model: DictConfig, shape: DataShape) -> torch.nn.Module:
    """The network ``model`` builds for ``shape``, on the meta device (shapes only, no memory).

    ``connectivity`` is built as 0 (the random connection mask draws its seed with
    ``.item()``, which a meta tensor cannot; the mask changes no shape) and ``init_from`` as
    null (the checkpoint is read by the run; the unshared FCN has the FCN's shapes).
    """
    cfg = OmegaConf.to_container(model, resolve=True)
    assert isinstance(cfg, dict)
    cfg.update(connectivity=0.0, init_from=None)
    return _meta_network(json.dumps(cfg, sort_keys=True), json.dumps(shape.info.__dict__, sort_keys=True))


def _free_layers(net: torch.nn.Module, names: Any, key: str) -> list[tuple[str, tuple[int, ...]]]:
    from weightshare.metrics.filter_distance import filter_kernel, free_layers

    try:
        found = free_layers(net, list(names) if names else None)
    except ConfigError as err:  # the function names its argument; the user set this key
        raise ConfigError(key, err.value, err.allowed) from None
    return [(n, tuple(filter_kernel(layer).shape)) for n, layer in found]


def check_geometry(cfg: DictConfig) -> None:
    """Raise ConfigError for a setting that does not fit the data or the network."""
    from weightshare.augment.validate import check_edge_width
    from weightshare.models.registry import is_free_model

    shape = data_shape(cfg.data)
    info, d = shape.info, cfg.data
    if d.split == "kfold" and d.n_folds > shape.rows:
        raise ConfigError("data.n_folds", d.n_folds, f"an integer in [2, {shape.rows}] (the rows of data={d.name})")
    check_edge_width("aug.edge_width", cfg.aug.edge_width, (info.height, info.width))
    if "edge_noise" in cfg.eval.variants:
        check_edge_width("eval.edge_width", cfg.eval.edge_width, (info.height, info.width))
    try:
        net = meta_network(cfg.model, shape)
    except (RuntimeError, NotImplementedError):  # an operation the meta device lacks: the run checks it
        return
    if not is_free_model(cfg.model.name):
        return
    c = cfg.callbacks
    if c.filter_images.enabled:
        layers = _free_layers(net, c.filter_images.layers, "callbacks.filter_images.layers")
        fewest = min((s[2] for _, s in layers), default=0)
        idx = c.filter_images.filter_index
        if layers and idx >= fewest:
            shown = {n: s[2] for n, s in layers}
            raise ConfigError(
                "callbacks.filter_images.filter_index",
                idx,
                f"an integer in [0, {fewest - 1}] (filters per layer: {shown})",
            )
    if c.filter_metrics.enabled:
        if len(c.filter_metrics.radii) == 0:
            allowed = "at least one radius >= 1 (or callbacks.filter_metrics.enabled=false)"
            raise ConfigError("callbacks.filter_metrics.radii", [], allowed)
        layers = _free_layers(net, c.filter_metrics.layers, "callbacks.filter_metrics.layers")
        maps = {n: (s[0], s[1]) for n, s in layers}
        largest = max((min(h, w) - 1) // 2 for h, w in maps.values()) if maps else 0
        for i, r in enumerate(c.filter_metrics.radii):
            if r > largest:
                raise ConfigError(
                    f"callbacks.filter_metrics.radii[{i}]",
                    r,
                    f"a radius in [1, {largest}]: one that fits a layer's position map {maps} (2r+1 positions a side)",
                )


def parameter_count(cfg: DictConfig) -> int:
    """The number of parameters of the configured network (from its meta build)."""
    net = meta_network(cfg.model, data_shape(cfg.data))
    return sum(p.numel() for p in net.parameters())
