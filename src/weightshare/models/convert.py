"""Unsharing a trained CNN: the first step of the weight-divergence experiment.

The FCN starts as an exact copy of the CNN: every position of every free layer receives the
convolution's kernel and bias (``FreeConv2d.from_conv``), the dense layers are copied, so the
two networks compute the same function until the first optimiser step.
"""

from __future__ import annotations

from omegaconf import DictConfig

from weightshare.checkpoints import load_checkpoint, module_state
from weightshare.data.dataset import DataInfo
from weightshare.errors import CheckpointError, ConfigError
from weightshare.models.paper_nets import PaperNet


def unshare(cnn: PaperNet, data: DataInfo, impl: str = "auto") -> PaperNet:
    """An FCN computing the same function as ``cnn`` (a fresh module; ``cnn`` is untouched)."""
    from weightshare.layers.free_conv import FreeConv2d

    if cnn.kind != "cnn":
        raise ConfigError("model.init_from", cnn.kind, "a checkpoint of a CNN run")
    fcn = PaperNet(data, "cnn", cnn.depth, cnn.fc1.out_features)
    fcn.load_state_dict(cnn.state_dict())
    size = (data.height, data.width)
    for name in cnn.conv_names:
        conv = getattr(cnn, name)
        free = FreeConv2d.from_conv(conv, size, impl=impl)
        setattr(fcn, name, free)
        size = free.output_size
    fcn.kind = "fcn"
    return fcn


def fcn_from_cnn_checkpoint(cfg: DictConfig, data: DataInfo) -> PaperNet:
    """Build the CNN stored in ``cfg.init_from`` and unshare it."""
    if cfg.connectivity > 0:
        raise ConfigError("model.connectivity", cfg.connectivity, "0 when model.init_from is set")
    ckpt = load_checkpoint(cfg.init_from)
    state = module_state(ckpt, "net.", cfg.init_from)
    depth = sum(1 for k in state if k.startswith("conv") and k.endswith(".weight"))
    if depth not in (2, 3):
        raise CheckpointError(f"checkpoint {cfg.init_from} does not hold a paper CNN (found {depth} conv layers)")
    if depth != cfg.depth:
        raise ConfigError("model.depth", cfg.depth, f"{depth}, the depth of the CNN in {cfg.init_from}")
    hidden = state["fc1.weight"].shape[0]
    cnn = PaperNet(data, "cnn", depth, hidden)
    try:
        cnn.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {cfg.init_from} does not fit a {data.name} CNN: {exc}") from None
    return unshare(cnn, data, impl=cfg.impl)
