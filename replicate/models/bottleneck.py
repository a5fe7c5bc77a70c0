"""ResNet50 and ResNet101 on ImageNet, and their published-version shared forms (docs/paper.md: The published
version's networks).

Bottleneck blocks (1x1 -> 3x3 with the stage's stride -> 1x1 expansion to 4p, projection shortcut on every
first block), torchvision's layout. In ``-Shared`` every non-first block of a stage calls the stage's one
shared 3x3 convolution (p -> p); in ``-Shared++`` it also calls a shared 1x1 expansion (p -> 4p). The shared
tensor is the whole convolution: no basis split, no coefficients, no basis BatchNorm, so widths and MACs are
the original network's and only parameters are saved. Each shared convolution is its own basis group and
starts orthogonal on its own (a 4p x p expansion gets orthonormal columns); the regulariser averages the 3x3
and the 1x1 convolutions in two separate pools and adds them.

Names are the 2021 README's. Its "ResNet50-Shared++" is the network the 2020 README printed as
"ResNet50-Shared" (same file and numbers); its "ResNet50-Shared" shares the 3x3 only.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import BasisBank, BasisGroup
from ..zoo import ModelConfig
from ..zoo.families import BOTTLENECK_BLOCKS as BLOCKS
from .registry import register_builder
from .resnet import Bottleneck, conv3x3, projection_shortcut
from .stems import classifier_head, stem

class BottleneckResNet(nn.Module):
    """ResNet50/101 for ImageNet whose non-first blocks share ``shared_convs`` whole convolutions per stage.

    Args:
        blocks: bottleneck blocks per stage.
        num_classes: classifier outputs.
        shared_convs: 0 (original), 1 (the 3x3: -Shared) or 2 (the 3x3 and the 1x1 expansion: -Shared++).
    """

    def __init__(self, blocks: tuple[int, ...], num_classes: int, shared_convs: int = 0) -> None:
        super().__init__()
        self.shared_convs = shared_convs
        self.shared_bases = BasisBank()
        self.stem = stem("imagenet", 64, kernel="7x7")
        channels, stages = 64, []
        for index, count in enumerate(blocks):
            planes = 64 * 2 ** index
            stages.append(self._stage(index, count, channels, planes, stride=1 if index == 0 else 2))
            channels = 4 * planes
        self.stages = nn.Sequential(*stages)
        self.head = classifier_head(channels, num_classes)
        self._init_weights()

    def _stage(self, index: int, count: int, in_channels: int, planes: int, stride: int) -> nn.Sequential:
        out_channels = 4 * planes
        blocks = [Bottleneck(in_channels, planes, out_channels, _middle(conv3x3(planes, planes, stride), planes),
                             planes, projection_shortcut(in_channels, out_channels, stride))]
        groups = self._groups(index, planes)
        for _ in range(count - 1):
            if not groups:
                blocks.append(Bottleneck(out_channels, planes, out_channels,
                                         _middle(conv3x3(planes, planes), planes), planes))
                continue
            middle = _middle(groups[0].conv(0, planes, planes, basis_norm=False, coefficients=False), planes)
            conv3 = groups[1].conv(0, planes, out_channels, basis_norm=False, coefficients=False) \
                if len(groups) > 1 else None
            blocks.append(Bottleneck(out_channels, planes, out_channels, middle, planes, conv3=conv3))
        return nn.Sequential(*blocks)

    def _groups(self, index: int, planes: int) -> list[BasisGroup]:
        """The stage's shared convolutions, each its own group (pooled separately by the regulariser)."""
        name = f"stage{index + 1}"
        if self.shared_convs == 1:
            return [self.shared_bases.new_group(name, [(planes, planes, 3, 3)])]
        shapes = [(planes, planes, 3, 3), (4 * planes, planes, 1, 1)][:self.shared_convs]
        return [self.shared_bases.new_group(f"{name}_{i}", [shape], pool=i) for i, shape in enumerate(shapes, 1)]

    def _init_weights(self) -> None:
        """Kaiming fan-out convolutions, unit BatchNorms, default Linear; then each shared conv orthogonal."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.shared_bases.orthogonal_init_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _middle(conv: nn.Module, width: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(width), nn.ReLU())


def _build(config: ModelConfig) -> BottleneckResNet:
    shared = {"original": 0, "naive": 1, "naive2": 2}[config.variant]
    return BottleneckResNet(BLOCKS[config.depth], config.num_classes, shared)


register_builder("resnet-bottleneck", _build)
