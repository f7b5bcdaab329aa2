"""The paper's networks (Ott et al. 2020, Table A.2).

Two or three valid-padded convolution layers (ordinary, free, or tile-shared), ReLU, no
pooling, no normalisation, then Flatten -> Dense(hidden, ReLU) -> Dense(classes). The layer
geometry per dataset is fixed by the protocol; for the small datasets (digits, synthetic)
the MNIST geometry is used on their 28x28 images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from weightshare.data.dataset import DataInfo
from weightshare.errors import ConfigError


@dataclass(frozen=True)
class ConvSpec:
    """One convolution layer of Table A.2."""

    kernel: int
    channels: int
    stride: int


# Table A.2 (layer 3 only at depth 3)
GEOMETRY: dict[str, tuple[ConvSpec, ...]] = {
    "mnist": (ConvSpec(3, 32, 2), ConvSpec(3, 64, 2), ConvSpec(3, 128, 1)),
    "cifar10": (ConvSpec(5, 64, 2), ConvSpec(5, 128, 2), ConvSpec(3, 256, 1)),
}


def geometry_for(data: DataInfo) -> tuple[ConvSpec, ...]:
    """Table A.2 geometry: CIFAR-10's for 32x32 colour data, MNIST's otherwise."""
    if data.name == "cifar10":
        return GEOMETRY["cifar10"]
    return GEOMETRY["mnist"]


def _out_size(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def position_maps(data: DataInfo, depth: int) -> list[tuple[int, int]]:
    """``(out_h, out_w)`` of each conv layer of the depth-``depth`` network for ``data``."""
    size, maps = (data.height, data.width), []
    for spec in geometry_for(data)[:depth]:
        size = (_out_size(size[0], spec.kernel, spec.stride), _out_size(size[1], spec.kernel, spec.stride))
        maps.append(size)
    return maps


def glorot_uniform_(weight: torch.Tensor, fan_in: int, fan_out: int) -> None:
    """Keras' default kernel initialiser (Glorot/Xavier uniform) with explicit fans."""
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    with torch.no_grad():
        weight.uniform_(-limit, limit)


def _make_conv_layer(
    kind: str,
    spec: ConvSpec,
    in_channels: int,
    size: tuple[int, int],
    *,
    connectivity: float,
    connectivity_mode: str,
    fcn_init: str,
    impl: str,
    share_tile: int | None,
    rank: int | None = None,
    combining: str = "full",
    lowrank_options: dict[str, Any] | None = None,
) -> nn.Module:
    if kind == "lowrank":
        from weightshare.layers.lowrank_conv import LowRankConv2d

        if rank is None:
            raise ConfigError("model.rank", rank, "an integer >= 1 with model=lowrank")
        return LowRankConv2d(
            in_channels,
            spec.channels,
            spec.kernel,
            stride=spec.stride,
            padding=0,
            input_size=size,
            rank=rank,
            combining=combining,
            init=fcn_init,
            **(lowrank_options or {}),
        )
    if kind == "cnn":
        conv = nn.Conv2d(in_channels, spec.channels, spec.kernel, stride=spec.stride, padding=0)
        fan_in = in_channels * spec.kernel**2
        glorot_uniform_(conv.weight, fan_in, spec.channels * spec.kernel**2)
        nn.init.zeros_(conv.bias)
        return conv
    from weightshare.layers.free_conv import FreeConv2d
    from weightshare.layers.tiled_conv import TiledConv2d

    geometry = {"stride": spec.stride, "padding": 0, "input_size": size, "init": fcn_init, "impl": impl}
    if share_tile is not None:
        return TiledConv2d(in_channels, spec.channels, spec.kernel, tile=share_tile, **geometry)
    return FreeConv2d(
        in_channels,
        spec.channels,
        spec.kernel,
        connectivity=connectivity,
        connectivity_mode=connectivity_mode,
        **geometry,
    )


class PaperNet(nn.Module):
    """Table A.2 network: ``conv1, conv2, [conv3]`` then ``fc1`` (hidden, ReLU) and ``fc2``.

    ``lowrank_options`` (``kind="lowrank"``): further keyword arguments of every
    ``LowRankConv2d`` (``basis_init``, ``bias``, ``spatial_bias``); none keeps the layer's defaults.
    """

    def __init__(
        self,
        data: DataInfo,
        kind: str = "cnn",
        depth: int = 3,
        hidden: int = 1024,
        *,
        connectivity: float = 0.0,
        connectivity_mode: str = "weight",
        fcn_init: str = "conv",
        impl: str = "auto",
        share_tile: int | None = None,
        rank: int | None = None,
        combining: str = "full",
        lowrank_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("cnn", "fcn", "lowrank"):
            raise ConfigError("model.name", kind, "'cnn', 'fcn' or 'lowrank' for the paper networks")
        if depth not in (2, 3):
            raise ConfigError("model.depth", depth, "2 or 3 for the paper networks")
        self.kind = kind
        self.depth = depth
        specs = geometry_for(data)[:depth]
        size = (data.height, data.width)
        channels = data.in_channels
        self.conv_names: list[str] = []
        for i, spec in enumerate(specs, start=1):
            if size[0] < spec.kernel or size[1] < spec.kernel:
                raise ConfigError("model.depth", depth, f"a depth whose layers fit {data.height}x{data.width} images")
            layer = _make_conv_layer(
                kind,
                spec,
                channels,
                size,
                connectivity=connectivity,
                connectivity_mode=connectivity_mode,
                fcn_init=fcn_init,
                impl=impl,
                share_tile=share_tile,
                rank=rank,
                combining=combining,
                lowrank_options=lowrank_options,
            )
            setattr(self, f"conv{i}", layer)
            self.conv_names.append(f"conv{i}")
            size = (_out_size(size[0], spec.kernel, spec.stride), _out_size(size[1], spec.kernel, spec.stride))
            channels = spec.channels
        self.feature_shape = (channels, size[0], size[1])
        flat = channels * size[0] * size[1]
        self.fc1 = nn.Linear(flat, hidden)
        self.fc2 = nn.Linear(hidden, data.num_classes)
        for fc in (self.fc1, self.fc2):
            glorot_uniform_(fc.weight, fc.in_features, fc.out_features)
            nn.init.zeros_(fc.bias)

    def convs(self) -> list[nn.Module]:
        return [getattr(self, n) for n in self.conv_names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.convs():
            x = torch.relu(layer(x))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once (parameters() deduplicates)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
