"""ResNets and ShaResNets: parameter counts against the ShaResNet paper, sharing structure,
gradient accumulation of the shared convolution, and a quick training step.

Big networks are built on the meta device (shapes only, no memory, no initialisation cost).
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from weightshare.errors import ConfigError
from weightshare.models.resnet import build_resnet
from weightshare.models.shared_conv import count_parameters, find_shared_modules

# ShaResNet paper (arXiv:1702.08782) Table 1: (arch, depth, k, classes) -> (plain, shared) in millions
PAPER_TABLE_1 = {
    ("cifar_preact", 164, 1, 10): (1.70, 0.93),
    ("wide", 40, 4, 10): (8.95, 5.85),
    ("wide", 28, 10, 100): (36.54, 26.86),  # a CIFAR-100 network in the paper
    ("imagenet", 34, 1, 1000): (21.8, 13.6),
    ("imagenet", 50, 1, 1000): (25.6, 20.5),
    ("imagenet", 101, 1, 1000): (44.5, 29.4),
    ("imagenet", 152, 1, 1000): (60.2, 36.8),
}
# exact counts of this implementation (regression pins; the paper check above is the reference)
EXACT = {
    ("cifar_preact", 164, 1, 10): (1_703_258, 929_114),
    ("wide", 40, 4, 10): (8_949_210, 5_852_634),
    ("wide", 28, 10, 100): (36_536_884, 26_860_084),
    ("imagenet", 34, 1, 1000): (21_797_672, 13_613_864),
    ("imagenet", 50, 1, 1000): (25_557_032, 20_469_800),
    ("imagenet", 101, 1, 1000): (44_549_160, 29_434_920),
    ("imagenet", 152, 1, 1000): (60_192_808, 36_821_032),
}


@functools.cache
def build_meta(arch: str, depth: int, k: int, classes: int, shared: bool) -> nn.Module:
    """Shapes only; cached because tests only read these models."""
    with torch.device("meta"):
        return build_resnet(arch, depth, k, shared=shared, num_classes=classes)


@pytest.mark.parametrize("key", list(PAPER_TABLE_1))
def test_parameter_counts_match_the_paper(key):
    plain, shared = count_parameters(build_meta(*key, False)), count_parameters(build_meta(*key, True))
    paper_plain, paper_shared = PAPER_TABLE_1[key]
    assert plain / 1e6 == pytest.approx(paper_plain, rel=0.01)
    assert shared / 1e6 == pytest.approx(paper_shared, rel=0.01)
    assert (plain, shared) == EXACT[key]


def test_saving_is_the_shared_3x3_convolutions():
    # ResNet-164: blocks 2..18 of each stage share one 3x3 conv of width 16/32/64,
    # so 16 copies per stage disappear: 16 * 9 * (16^2 + 32^2 + 64^2)
    plain, shared = EXACT[("cifar_preact", 164, 1, 10)]
    assert plain - shared == 16 * 9 * (16**2 + 32**2 + 64**2)
    # ResNet-34 (basic, every block of a stage shares): (count - 1) * 9 * width^2 per stage
    plain, shared = EXACT[("imagenet", 34, 1, 1000)]
    assert plain - shared == 9 * (2 * 64**2 + 3 * 128**2 + 5 * 256**2 + 2 * 512**2)
    # ResNet-50 (bottleneck): stage 1 all 3 blocks share, stages 2-4 all but the strided first
    plain, shared = EXACT[("imagenet", 50, 1, 1000)]
    assert plain - shared == 9 * (2 * 64**2 + 2 * 128**2 + 4 * 256**2 + 1 * 512**2)


@pytest.mark.parametrize(
    ("arch", "depth", "k", "groups"),
    [
        ("cifar_preact", 164, 1, [17, 17, 17]),
        ("wide", 40, 4, [5, 5, 5]),
        ("wide", 16, 1, []),  # n=2: the one non-first block has nobody to share with
        ("imagenet", 18, 1, [2, 2, 2, 2]),
        ("imagenet", 152, 1, [3, 7, 35, 2]),
    ],
)
def test_sharing_structure(arch, depth, k, groups):
    model = build_meta(arch, depth, k, 10, True)
    found = find_shared_modules(model)
    assert [len(g) for g in found] == groups
    for group in found:
        module = model.get_submodule(group[0])
        assert isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3) and module.stride == (1, 1)
        assert all(name.endswith(".conv2") for name in group)
        stage = {name.split(".")[0] for name in group}
        assert len(stage) == 1  # never shared across stages
    if arch != "imagenet":  # CIFAR: the first block of a stage keeps its own weights
        assert all(name.split(".")[1] != "0" for g in found for name in g)
    assert find_shared_modules(build_meta(arch, depth, k, 10, False)) == []
    # batch norms are never shared
    names = [n for n, m in model.named_modules(remove_duplicate=False) if isinstance(m, nn.BatchNorm2d)]
    ids = [id(model.get_submodule(n)) for n in names]
    assert len(ids) == len(set(ids))


def untie(model: nn.Module) -> tuple[nn.Module, dict[int, list[nn.Module]]]:
    """A copy in which every block's conv2 is an independent copy carrying the same weights.

    Returns the copy and, per shared conv of the original (by id), the list of its copies.
    """
    tied = copy.deepcopy(model)
    uses: dict[int, list[nn.Module]] = {}
    original = {name: m for name, m in model.named_modules(remove_duplicate=False)}
    for name, block in list(tied.named_modules()):
        if hasattr(block, "conv2"):
            src = original[name].conv2
            block.conv2 = copy.deepcopy(src)
            uses.setdefault(id(src), []).append(block.conv2)
    return tied, uses


@pytest.mark.parametrize(
    ("arch", "depth", "k"),
    [("wide", 22, 1), ("cifar_preact", 29, 1), pytest.param("imagenet", 18, 1, marks=pytest.mark.slow)],
)
def test_shared_gradient_is_the_sum_of_per_use_gradients(arch, depth, k):
    torch.manual_seed(0)
    model = build_resnet(arch, depth, k, shared=True).double().train()
    untied, uses = untie(model)
    assert count_parameters(untied) == count_parameters(build_resnet(arch, depth, k, shared=False))
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)  # small: adaptive pooling takes any size
    y = torch.tensor([0, 3, 7, 9])
    out, out_untied = model(x), untied(x)
    torch.testing.assert_close(out, out_untied, rtol=1e-12, atol=1e-12)
    F.cross_entropy(out, y).backward()
    F.cross_entropy(out_untied, y).backward()
    shared = model.shared_convs
    assert len(shared) == len(find_shared_modules(model)) > 0
    for conv in shared:
        copies = uses[id(conv)]
        assert len(copies) >= 2
        per_use = torch.stack([c.weight.grad for c in copies])
        assert all(g.abs().sum() > 0 for g in per_use)  # every use contributes
        torch.testing.assert_close(conv.weight.grad, per_use.sum(0), rtol=1e-10, atol=1e-12)
    # a shared parameter is counted (and optimised) once
    n_shared = sum(c.weight.numel() for c in shared)
    uses_total = sum(len(uses[id(c)]) * c.weight.numel() for c in shared)
    assert count_parameters(untied) - count_parameters(model) == uses_total - n_shared


@pytest.mark.parametrize(
    ("arch", "depth", "k", "shared"), [("wide", 10, 1, False), ("cifar_preact", 11, 1, False), ("wide", 22, 1, True)]
)
def test_quick_training_step_on_a_cifar_batch(arch, depth, k, shared):
    torch.manual_seed(1)
    model = build_resnet(arch, depth, k, shared=shared, num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    losses = []
    for _ in range(2):  # one step on a batch: its loss must fall
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    assert model(x[:2]).shape == (2, 10)


def test_other_inputs_and_state_dict_roundtrip():
    torch.manual_seed(2)
    mnist = build_resnet("wide", 22, 1, shared=True, num_classes=10, in_channels=1).eval()
    assert mnist(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    clone = build_resnet("wide", 22, 1, shared=True, num_classes=10, in_channels=1).eval()
    clone.load_state_dict(mnist.state_dict())
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(clone(x), mnist(x))
    # sharing survives loading (the same tensor is written once per use)
    assert [len(g) for g in find_shared_modules(clone)] == [2, 2, 2]
    assert clone.stage1[1].conv2 is clone.stage1[2].conv2


def test_initialisation():
    torch.manual_seed(3)
    model = build_resnet("wide", 16, 8, shared=False)
    w = model.stage3[1].conv2.weight  # 512 -> 512, 3x3: He normal over fan_out = 9 * 512
    assert w.std().item() == pytest.approx((2 / (9 * 512)) ** 0.5, rel=0.02)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert torch.count_nonzero(model.fc.bias) == 0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"arch": "vgg", "depth": 16}, "model.arch"),
        ({"arch": "cifar_preact", "depth": 12}, "model.depth"),
        ({"arch": "wide", "depth": 11}, "model.depth"),
        ({"arch": "imagenet", "depth": 20}, "model.depth"),
        ({"arch": "imagenet", "depth": 50, "widen_factor": 2}, "model.widen_factor"),
        ({"arch": "wide", "depth": 28, "widen_factor": 0}, "model.widen_factor"),
        ({"arch": "wide", "depth": 28, "num_classes": 0}, "data.num_classes"),
    ],
)
def test_bad_configs_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_resnet(**kwargs)
