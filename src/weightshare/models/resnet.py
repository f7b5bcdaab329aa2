"""Residual networks and their ShaResNet variants (Boulch, arXiv:1702.08782).

Three families, built by :func:`build_resnet`:

- ``cifar_preact``: the pre-activation bottleneck ResNet of He et al. ("Identity Mappings",
  ResNet-164 and friends), depth ``9n + 2``, stage widths 64/128/256 (bottleneck 16/32/64),
  stride on the first 1x1 convolution of a stage's first block, as in the Torch code the
  ShaResNet CIFAR models were trained with (Zagoruyko's ``resnet-pre-act.lua``).
- ``wide``: WRN-d-k of Zagoruyko & Komodakis, pre-activation basic blocks, depth ``6n + 4``,
  stage widths 16k/32k/64k, no dropout.
- ``imagenet``: ResNet-18/34 (basic) and 50/101/152 (bottleneck) of fb.resnet.torch
  (post-activation, shortcut type B: a 1x1 convolution + batch norm where the width changes,
  stride on the bottleneck's 3x3 convolution), 7x7 stem and max pooling.

All convolutions are bias-free (the Torch code removes their biases), the classifier is a
``Linear`` with bias; convolutions get He normal initialisation over ``fan_out``, batch norms
weight 1 / bias 0, the classifier bias 0. Global average pooling is adaptive, so the networks
also run on inputs other than 32x32 (CIFAR) or 224x224 (ImageNet).

ShaResNet (``shared=True``): inside each stage one 3x3 convolution is shared by the blocks
(basic blocks: their second 3x3 convolution; bottleneck blocks: their 3x3 convolution); batch
norms are never shared. The shared convolution is ONE ``nn.Conv2d`` registered in every block
that uses it, so ``parameters()`` yields it once and its gradient is the sum over its uses.
Which blocks take part follows Boulch's published code, and reproduces Table 1 of the paper:

- CIFAR (``cifar_preact``, ``wide``): the first block of every stage keeps its own 3x3
  convolution (it also changes width or resolution); blocks 2..n share one.
- ImageNet basic blocks (ResNet-18/34): *every* block of a stage, the first included, uses the
  stage's shared convolution as its second 3x3 convolution (its input is already at the
  stage's width and resolution).
- ImageNet bottleneck blocks (ResNet-50/101/152): every block whose 3x3 convolution has stride 1
  shares it: all blocks of stage 1, and all but the (strided) first block of stages 2-4.

Parameter counts (ImageNet ones with 1000 classes; paper's Table 1 in brackets): ResNet-164
1,703,258 -> 929,114 (1.70M -> 0.93M); WRN-40-4 8,949,210 -> 5,852,634 (8.95M -> 5.85M);
WRN-28-10 (100 classes) 36,536,884 -> 26,860,084 (36.54M -> 26.86M); ResNet-34
21,797,672 -> 13,613,864 (21.8M -> 13.6M); ResNet-50 25,557,032 -> 20,469,800
(25.6M -> 20.5M); ResNet-101 44,549,160 -> 29,434,920 (44.5M -> 29.4M); ResNet-152
60,192,808 -> 36,821,032 (60.2M -> 36.8M).

Why not torchvision: it is an optional dependency here, has no pre-activation/wide CIFAR
variants, and its blocks cannot take an externally owned (shared) convolution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightshare.errors import ConfigError

__all__ = [
    "ARCHS",
    "IMAGENET_DEPTHS",
    "BasicBlock",
    "Bottleneck",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "build_resnet",
]

ARCHS = ("cifar_preact", "wide", "imagenet")
IMAGENET_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (batch norm follows or precedes it)."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


# --------------------------------------------------------------------------- CIFAR blocks


def _preact_two_convs(block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The start both pre-activation blocks share: ``(conv2(BN-ReLU(conv1(BN-ReLU(x)))), skip)``.

    The shortcut reads the pre-activated input when it is a projection, the raw input otherwise.
    """
    o = F.relu(block.bn1(x))
    skip = x if block.shortcut is None else block.shortcut(o)
    return block.conv2(F.relu(block.bn2(block.conv1(o)))), skip


class PreActBasicBlock(nn.Module):
    """Wide-ResNet block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus the shortcut.

    When the width changes the shortcut is a strided 1x1 convolution applied to the
    pre-activated input (as in the WRN code); otherwise it is the identity on the raw input.
    ``conv2`` may be a convolution shared with other blocks (ShaResNet).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, conv2: nn.Conv2d | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv2 if conv2 is not None else conv3x3(planes, planes)
        needs_proj = in_planes != planes or stride != 1
        self.shortcut = conv1x1(in_planes, planes, stride) if needs_proj else None

    def forward(self, x: Tensor) -> Tensor:
        out, skip = _preact_two_convs(self, x)
        return out + skip


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1x1(stride)-BN-ReLU-3x3-BN-ReLU-1x1, plus shortcut.

    ``planes`` is the output width; the bottleneck width is ``planes // 4``. ``conv2`` (the
    3x3 convolution) may be shared with other blocks (ShaResNet).
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, conv2: nn.Conv2d | None = None):
        super().__init__()
        mid = planes // self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, mid, stride)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = conv2 if conv2 is not None else conv3x3(mid, mid)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = conv1x1(mid, planes)
        needs_proj = in_planes != planes or stride != 1
        self.shortcut = conv1x1(in_planes, planes, stride) if needs_proj else None

    def forward(self, x: Tensor) -> Tensor:
        out, skip = _preact_two_convs(self, x)
        out = self.conv3(F.relu(self.bn3(out)))
        return out + skip


# ------------------------------------------------------------------------ ImageNet blocks


def _projection(in_planes: int, planes: int, stride: int) -> nn.Module | None:
    """Shortcut type B: 1x1 convolution + batch norm where width or resolution changes."""
    if in_planes == planes and stride == 1:
        return None
    return nn.Sequential(conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes))


class BasicBlock(nn.Module):
    """Post-activation basic block: conv3x3(stride)-BN-ReLU-conv3x3-BN, add, ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, conv2: nn.Conv2d | None = None):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv2 if conv2 is not None else conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + skip)


class Bottleneck(nn.Module):
    """Post-activation bottleneck: 1x1-BN-ReLU-3x3(stride)-BN-ReLU-1x1(x4)-BN, add, ReLU.

    ``planes`` is the bottleneck width; the output width is ``4 * planes``.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, conv2: nn.Conv2d | None = None):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv2 if conv2 is not None else conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _projection(in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + skip)


# ---------------------------------------------------------------------------- network

BlockFactory = Callable[[int, int, int, "nn.Conv2d | None"], nn.Module]


class ResNet(nn.Module):
    """Stem -> stages (``stage1``..``stageN``, each an ``nn.Sequential`` of blocks) -> head.

    ``head_bn`` is the final batch norm of pre-activation networks (``None`` for ImageNet
    networks, whose blocks end activated). ``shared_convs`` lists the stages' shared 3x3
    convolutions (empty for a plain ResNet; a stage with a single sharing block, e.g. WRN-16's
    n=2, still has one, used once); each is also registered inside its blocks, which is where
    ``parameters()`` and ``state_dict()`` find it (``state_dict`` holds one key per use, all
    naming the same tensor; ``torch.save`` stores it once).
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: list[nn.Sequential],
        head_bn: nn.Module | None,
        features: int,
        num_classes: int,
        shared_convs: list[nn.Conv2d],
    ):
        super().__init__()
        self.stem = stem
        for i, stage in enumerate(stages, start=1):
            self.add_module(f"stage{i}", stage)
        self.num_stages = len(stages)
        self.head_bn = head_bn
        self.fc = nn.Linear(features, num_classes)
        # a plain list, not a ModuleList: the convolutions are registered in their blocks
        self.shared_convs = list(shared_convs)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"stage{i}")(x)
        if self.head_bn is not None:
            x = F.relu(self.head_bn(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def _make_stage(
    block: BlockFactory,
    in_planes: int,
    planes: int,
    out_planes: int,
    shared_width: int,
    count: int,
    stride: int,
    shared: bool,
    share_from: int,
    share_strided: bool,
) -> tuple[nn.Sequential, nn.Conv2d | None]:
    """``count`` blocks; with ``shared``, blocks ``share_from..count-1`` use one 3x3 convolution.

    ``planes`` is what the block factory takes as its width argument, ``out_planes`` the width
    a block outputs (and so the input width of the next block). ``share_strided=False`` keeps a
    block's own 3x3 convolution when that block is strided (ImageNet bottleneck: the stride
    sits on the 3x3). The factory is called as ``block(in, planes, stride, conv2_or_None)``.
    """
    shared_conv = conv3x3(shared_width, shared_width) if shared else None
    blocks: list[nn.Module] = []
    used = False
    for i in range(count):
        block_stride = stride if i == 0 else 1
        use_shared = shared and i >= share_from and (share_strided or block_stride == 1)
        blocks.append(
            block(in_planes if i == 0 else out_planes, planes, block_stride, shared_conv if use_shared else None)
        )
        used = used or use_shared
    return nn.Sequential(*blocks), (shared_conv if used else None)


def _build_cifar(arch: str, depth: int, k: int, shared: bool, num_classes: int, in_channels: int) -> ResNet:
    if arch == "cifar_preact":
        if depth < 11 or (depth - 2) % 9:
            raise ConfigError("model.depth", depth, "9n+2, n >= 1 for arch=cifar_preact (11, 20, ..., 164)")
        n = (depth - 2) // 9
        widths = (64, 128, 256)
        block: BlockFactory = PreActBottleneck
        shared_widths = tuple(w // PreActBottleneck.expansion for w in widths)
    else:
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError("model.depth", depth, "6n+4, n >= 1 for arch=wide (10, 16, 22, 28, 40, ...)")
        n = (depth - 4) // 6
        widths = (16 * k, 32 * k, 64 * k)
        block = PreActBasicBlock
        shared_widths = widths
    stem = conv3x3(in_channels, 16)
    stages, shared_convs = [], []
    in_planes = 16
    for i, (width, sw) in enumerate(zip(widths, shared_widths)):
        stage, sconv = _make_stage(
            block, in_planes, width, width, sw, n, 1 if i == 0 else 2, shared, share_from=1, share_strided=True
        )
        stages.append(stage)
        if sconv is not None:
            shared_convs.append(sconv)
        in_planes = width
    return ResNet(stem, stages, nn.BatchNorm2d(in_planes), in_planes, num_classes, shared_convs)


def _build_imagenet(depth: int, shared: bool, num_classes: int, in_channels: int) -> ResNet:
    if depth not in IMAGENET_DEPTHS:
        raise ConfigError("model.depth", depth, f"one of {sorted(IMAGENET_DEPTHS)} for arch=imagenet")
    kind, counts = IMAGENET_DEPTHS[depth]
    block: BlockFactory = BasicBlock if kind == "basic" else Bottleneck
    expansion = 1 if kind == "basic" else Bottleneck.expansion
    stem = nn.Sequential(
        nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    stages, shared_convs = [], []
    in_planes = 64
    for i, (planes, count) in enumerate(zip((64, 128, 256, 512), counts)):
        # basic blocks: the shared conv is the (never strided) second 3x3, so every block
        # shares it; bottleneck: the 3x3 carries the stride, so a strided first block keeps its own
        stage, sconv = _make_stage(
            block,
            in_planes,
            planes,
            planes * expansion,
            planes,
            count,
            1 if i == 0 else 2,
            shared,
            share_from=0,
            share_strided=kind == "basic",
        )
        stages.append(stage)
        if sconv is not None:
            shared_convs.append(sconv)
        in_planes = planes * expansion
    return ResNet(stem, stages, None, in_planes, num_classes, shared_convs)


def _init_weights(model: nn.Module) -> None:
    """He normal (fan_out) convolutions, unit/zero batch norms, zero classifier bias.

    ``modules()`` visits a shared convolution once, so it is initialised once.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def build_resnet(
    arch: str, depth: int, widen_factor: int = 1, shared: bool = False, num_classes: int = 10, in_channels: int = 3
) -> ResNet:
    """A ResNet (``shared=False``) or ShaResNet (``shared=True``); see the module docstring.

    Args:
        arch: ``cifar_preact`` (depth 9n+2, e.g. 164), ``wide`` (WRN, depth 6n+4, e.g. 28 or
            40) or ``imagenet`` (depth 18, 34, 50, 101, 152).
        depth: number of weighted layers in the usual naming.
        widen_factor: WRN's k (``wide`` only; must be 1 for the other architectures).
        shared: share one 3x3 convolution per stage (ShaResNet).
        num_classes: classifier outputs.
        in_channels: image channels (3 for CIFAR/ImageNet, 1 for MNIST).

    Raises:
        ConfigError: unknown ``arch``, a depth the architecture does not define, or a bad width.
    """
    if arch not in ARCHS:
        raise ConfigError("model.arch", arch, f"one of {list(ARCHS)}")
    sizes = {
        "model.depth": depth,
        "model.widen_factor": widen_factor,
        "data.num_classes": num_classes,
        "data.in_channels": in_channels,
    }
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(key, value, "an integer >= 1")
    if arch != "wide" and widen_factor != 1:
        raise ConfigError("model.widen_factor", widen_factor, f"1 for arch={arch} (only arch=wide widens)")
    if arch == "imagenet":
        model = _build_imagenet(depth, bool(shared), num_classes, in_channels)
    else:
        model = _build_cifar(arch, depth, widen_factor, bool(shared), num_classes, in_channels)
    _init_weights(model)
    return model
