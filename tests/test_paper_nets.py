"""The project's Table A.2 networks: parameter counts and shapes."""

from __future__ import annotations

import pytest
import torch

from weightshare.data.dataset import DataInfo
from weightshare.errors import ConfigError
from weightshare.models.paper_nets import PaperNet, count_parameters

MNIST = DataInfo("mnist", 1, 28, 28, 10)
CIFAR = DataInfo("cifar10", 3, 32, 32, 10)


def _hand_count(data: DataInfo, kind: str, depth: int) -> int:
    """Count by hand from Table A.2: (kernel, channels, stride) per layer, valid padding."""
    specs = [(3, 32, 2), (3, 64, 2), (3, 128, 1)] if data.name == "mnist" else [(5, 64, 2), (5, 128, 2), (3, 256, 1)]
    size, c_in, total = data.height, data.in_channels, 0
    for k, c_out, s in specs[:depth]:
        size = (size - k) // s + 1
        per_kernel = k * k * c_in * c_out + c_out
        total += per_kernel * (size * size if kind == "fcn" else 1)
        c_in = c_out
    flat = c_in * size * size
    return total + flat * 1024 + 1024 + 1024 * 10 + 10


@pytest.mark.parametrize(
    ("data", "kind", "expected"),
    [(MNIST, "cnn", 2_201_098), (MNIST, "fcn", 4_010_058), (CIFAR, "cnn", 2_875_530), (CIFAR, "fcn", 11_103_626)],
)
def test_depth3_parameter_counts_match_the_protocol(data, kind, expected) -> None:
    assert count_parameters(PaperNet(data, kind, 3)) == expected
    assert _hand_count(data, kind, 3) == expected  # the hand count agrees with the protocol too


@pytest.mark.parametrize("data", [MNIST, CIFAR])
@pytest.mark.parametrize("kind", ["cnn", "fcn"])
def test_depth2_parameter_counts(data, kind) -> None:
    assert count_parameters(PaperNet(data, kind, 2)) == _hand_count(data, kind, 2)


@pytest.mark.parametrize(
    ("data", "depth", "shape"),
    [(MNIST, 3, (128, 4, 4)), (MNIST, 2, (64, 6, 6)), (CIFAR, 3, (256, 3, 3)), (CIFAR, 2, (128, 5, 5))],
)
def test_output_maps_follow_table_a2(data, depth, shape) -> None:
    net = PaperNet(data, "fcn", depth)
    assert net.feature_shape == shape
    assert net(torch.rand(2, data.in_channels, data.height, data.width)).shape == (2, 10)


def test_share_tile_counts_interpolate_between_cnn_and_fcn() -> None:
    counts = [count_parameters(PaperNet(MNIST, "fcn", 3, share_tile=t)) for t in (1, 2, 4, 13)]
    assert counts[0] == 4_010_058 and counts[-1] == 2_201_098
    assert counts == sorted(counts, reverse=True)


def test_bad_depth_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.depth"):
        PaperNet(MNIST, "cnn", 4)
