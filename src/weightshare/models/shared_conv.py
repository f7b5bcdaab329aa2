"""Counting and finding parameters that are shared between several uses.

ShaResNet shares a 3x3 convolution between the blocks of a stage by registering the *same*
``nn.Conv2d`` object in every block that uses it. PyTorch then already does the right thing:
``parameters()`` yields each tensor once (so the optimiser and weight decay see it once) and
autograd sums the gradients of every use into its ``.grad``. These helpers make that sharing
visible: counting a model's parameters once each, and listing which modules are reachable
under several names.

The count is :func:`weightshare.models.paper_nets.count_parameters` (re-exported here, one
definition for the whole project): ``nn.Module.parameters()`` de-duplicates by identity, which
is exactly the count a shared network stores and trains (ShaResNet's Table 1 counts this way);
summing over ``state_dict()`` instead would count a shared convolution once per block.
"""

from __future__ import annotations

from torch import nn

from weightshare.models.paper_nets import count_parameters

__all__ = ["count_parameters", "find_shared_modules"]


def find_shared_modules(module: nn.Module) -> list[list[str]]:
    """Groups of qualified names that refer to one and the same sub-module.

    Only modules reachable under two or more names are listed (each group in registration
    order, groups ordered by first appearance). A plain ResNet gives ``[]``; a ShaResNet gives
    one group per stage, e.g. ``["stage1.1.conv2", "stage1.2.conv2", ...]``.
    """
    names: dict[int, list[str]] = {}
    for name, sub in module.named_modules(remove_duplicate=False):
        names.setdefault(id(sub), []).append(name)
    return [group for group in names.values() if len(group) > 1]
