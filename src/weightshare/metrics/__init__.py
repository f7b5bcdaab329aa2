"""Metrics computed from a network's weights (not from its predictions)."""

from weightshare.metrics.filter_distance import (
    distance_to_mean,
    distance_to_reference,
    free_layers,
    layer_filter_metrics,
    ring_distances,
    ring_offsets,
)

__all__ = [
    "distance_to_mean",
    "distance_to_reference",
    "free_layers",
    "layer_filter_metrics",
    "ring_distances",
    "ring_offsets",
]
