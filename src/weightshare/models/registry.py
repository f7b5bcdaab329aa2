"""The model registry: one list of model names that factories, validation and tests all read.

Why a registry (as timm's): ``model.name`` is validated, built, reported and tested in
different places; each of them reads :data:`MODELS` instead of keeping its own list, so a
new model is one entry here (and its builder), nothing else.

``family`` says which config keys apply: ``paper`` networks (Table A.2: ``depth`` 2/3,
``hidden``) or ``resnet`` networks (``arch``, ``depth``, ``widen_factor``). ``free`` says
that the network has per-position kernels (the free layers whose filter distances and
images the callbacks record); ``unshared`` that the FCN-only options (connection patterns,
tiles, the sharing penalty, ``init_from``) apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig
from torch import nn

from weightshare.data.dataset import DataInfo

Builder = Callable[[DictConfig, DataInfo], nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its config family, whether it has free layers, and its builder."""

    name: str
    family: str
    free: bool
    build: Builder
    summary: str


def _paper_net(cfg: DictConfig, data: DataInfo) -> nn.Module:
    from weightshare.models.paper_nets import PaperNet

    if cfg.init_from:
        from weightshare.models.convert import fcn_from_cnn_checkpoint

        return fcn_from_cnn_checkpoint(cfg, data)
    return PaperNet(
        data,
        cfg.name,
        cfg.depth,
        cfg.hidden,
        connectivity=cfg.connectivity,
        connectivity_mode=cfg.connectivity_mode,
        fcn_init=cfg.fcn_init,
        impl=cfg.impl,
        share_tile=cfg.share_tile,
    )


def _lowrank_net(cfg: DictConfig, data: DataInfo) -> nn.Module:
    from weightshare.models.paper_nets import PaperNet

    return PaperNet(
        data,
        "lowrank",
        cfg.depth,
        cfg.hidden,
        fcn_init=cfg.fcn_init,
        rank=cfg.rank,
        combining=cfg.combining,
        lowrank_options={
            "basis_init": cfg.basis_init,
            "bias": cfg.filter_bias,
            "spatial_bias": cfg.spatial_bias,
        },
    )


def _resnet(cfg: DictConfig, data: DataInfo) -> nn.Module:
    from weightshare.models.resnet import build_resnet

    return build_resnet(
        cfg.arch,
        cfg.depth,
        widen_factor=cfg.widen_factor,
        shared=cfg.name == "sharesnet",
        num_classes=data.num_classes,
        in_channels=data.in_channels,
    )


MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry("cnn", "paper", False, _paper_net, "the paper's CNN (Table A.2)"),
        ModelEntry("fcn", "paper", True, _paper_net, "the same layers without weight sharing"),
        ModelEntry("lowrank", "paper", True, _lowrank_net, "low-rank local connectivity (Elsayed et al. 2020)"),
        ModelEntry("resnet", "resnet", False, _resnet, "pre-activation / wide / ImageNet ResNets"),
        ModelEntry("sharesnet", "resnet", False, _resnet, "ShaResNet: per-stage shared 3x3 convolutions"),
    )
}

#: every model name, in registry order
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def names_of(family: str) -> tuple[str, ...]:
    """The registered model names of one config family (``paper`` or ``resnet``)."""
    return tuple(n for n, e in MODELS.items() if e.family == family)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; a ConfigError naming the registered models otherwise."""
    from weightshare.errors import ConfigError

    if name not in MODELS:
        raise ConfigError("model.name", name, f"one of {list(MODEL_NAMES)}")
    return MODELS[name]


def is_free_model(name: str) -> bool:
    """Whether ``model.name`` has free (per-position) layers whose filters are recorded."""
    return name in MODELS and MODELS[name].free
