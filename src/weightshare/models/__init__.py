"""Networks: the paper's CNN/FCN (Table A.2) and the residual networks, by registered name.

:data:`~weightshare.models.registry.MODELS` is the list of names; the config-to-network
builder is :func:`weightshare.builders.build_model`.
"""

from __future__ import annotations

from weightshare.models.paper_nets import PaperNet, count_parameters
from weightshare.models.registry import MODEL_NAMES, MODELS, model_entry

__all__ = ["MODELS", "MODEL_NAMES", "PaperNet", "count_parameters", "model_entry"]
