"""Layers: free (locally connected) convolution and its weight-sharing variants."""

from .common import filter_kernel
from .free_conv import FreeConv2d, free_conv2d
from .share_penalty import model_share_penalty, neighbour_penalty
from .tiled_conv import TiledConv2d

__all__ = [
    "FreeConv2d",
    "TiledConv2d",
    "filter_kernel",
    "free_conv2d",
    "model_share_penalty",
    "neighbour_penalty",
]
