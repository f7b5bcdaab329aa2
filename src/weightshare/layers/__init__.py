"""Layers: free (locally connected) convolution and its weight-sharing variants."""

from .free_conv import FreeConv2d, free_conv2d

__all__ = ["FreeConv2d", "free_conv2d"]
from .share_penalty import model_share_penalty as model_share_penalty
from .share_penalty import neighbour_penalty as neighbour_penalty
from .tiled_conv import TiledConv2d as TiledConv2d
