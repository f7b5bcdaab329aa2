"""Metrics computed from a network's weights (not from its predictions).

The public API is :mod:`weightshare.metrics.filter_distance`'s ``__all__``, re-exported here
as is (one list of names to maintain, not two).
"""

from weightshare.metrics import filter_distance
from weightshare.metrics.filter_distance import *  # noqa: F403

__all__ = list(filter_distance.__all__)
