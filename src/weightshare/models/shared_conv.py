"""Counting and finding parameters that are shared between several uses.

ShaResNet shares a 3x3 convolution between the blocks of a stage by registering the *same*
``nn.Conv2d`` object in every block that uses it. PyTorch then already does the right thing:
``parameters()`` yields each tensor once (so the optimiser and weight decay see it once) and
autograd sums the gradients of every use into its ``.grad``. These helpers make that sharing
visible: counting a model's parameters once each, and listing which modules are reachable
under several names.
"""

from __future__ import annotations

from torch import nn

__all__ = ["count_params", "find_shared_modules"]


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters, each shared tensor counted once.

    ``nn.Module.parameters()`` de-duplicates by identity, which is exactly the count a shared
    network stores and trains (ShaResNet's Table 1 counts this way); summing over
    ``state_dict()`` instead would count a shared convolution once per block.
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


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
