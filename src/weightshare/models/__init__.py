"""Model builders: the paper's networks and the residual networks."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from weightshare.models.paper_nets import DataInfo, PaperNet, count_parameters

__all__ = ["DataInfo", "PaperNet", "build_model", "count_parameters"]


def build_model(cfg: DictConfig, data: DataInfo) -> nn.Module:
    """Build the network named by ``cfg.name`` (cnn, fcn, resnet, sharesnet) for ``data``.

    With ``cfg.init_from`` set (FCN only), the FCN starts as an exact copy of the CNN in that
    checkpoint (the weight-divergence experiment).
    """
    if cfg.name in ("cnn", "fcn"):
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
    if cfg.name == "lowrank":  # low-rank locally connected layers (layers.lowrank_conv)
        return PaperNet(
            data, "lowrank", cfg.depth, cfg.hidden, fcn_init=cfg.fcn_init, rank=cfg.rank, combining=cfg.combining
        )
    from weightshare.models.resnet import build_resnet

    return build_resnet(
        cfg.arch,
        cfg.depth,
        widen_factor=cfg.widen_factor,
        shared=cfg.name == "sharesnet",
        num_classes=data.num_classes,
        in_channels=data.in_channels,
    )
