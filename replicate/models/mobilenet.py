"""MobileNetV2 and MobileNetV2-Shared as the reference builds them (docs/paper.md: The networks).

Reference quirks kept so that sizes match: every block has an expansion 1x1 conv (also when t = 1); the
stem and the 1280-wide conv have biases; ReLU inside blocks, ReLU6 in the stem and last conv. CIFAR: a 1x1
stem with padding 1 (34x34 maps), stage 6 at stride 1, 1x1-conv+BN shortcuts on stride-1 blocks that change
width, and a 1x1-conv classifier with bias. MobileNetV2-Shared replaces the expansion conv of blocks 2..n of
stages 3–6 by the stage's shared 1x1 conv (no unique part, no coefficients, no orthogonal init).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BasisBank, BasisGroup, SharingPlan
from .registry import CIFAR100_AND_IMAGENET, Family, register

# (expansion t, output channels, repeats, stride on CIFAR, stride on ImageNet)
STAGES = ((1, 16, 1, 1, 1), (6, 24, 2, 2, 2), (6, 32, 3, 2, 2), (6, 64, 4, 2, 2),
          (6, 96, 3, 1, 1), (6, 160, 3, 1, 2), (6, 320, 1, 1, 1))
SHARED_STAGES = (2, 3, 4, 5)  # zero-based: stages 3–6 of the table


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int, cifar: bool,
                 expand: nn.Module | None = None) -> None:
        super().__init__()
        hidden = expansion * in_channels
        self.expand = expand if expand is not None else nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.residual = stride == 1 and (cifar or in_channels == out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if self.residual and in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.expand(x)))
        out = F.relu(self.bn2(self.depthwise(out)))
        out = self.bn3(self.project(out))
        return out + self.shortcut(x) if self.residual else out


class MobileNetV2(nn.Module):
    def __init__(self, dataset: str, num_classes: int, plan: SharingPlan = SharingPlan()) -> None:
        super().__init__()
        self.plan, self.dataset = plan, dataset
        cifar = dataset != "imagenet"
        self.shared_bases = BasisBank()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 1, 1, 1) if cifar else nn.Conv2d(3, 32, 3, 2, 1),
            nn.BatchNorm2d(32), nn.ReLU6(inplace=True))
        blocks, channels = [], 32
        for index, (t, out_channels, repeats, stride_cifar, stride_imagenet) in enumerate(STAGES):
            group = self._basis_group(index, out_channels, t)
            for repeat in range(repeats):
                stride = (stride_cifar if cifar else stride_imagenet) if repeat == 0 else 1
                expand = group.conv(0, channels, channels * t, basis_norm=False, coefficients=False) \
                    if group is not None and repeat > 0 else None
                blocks.append(InvertedResidual(channels, out_channels, t, stride, cifar, expand))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.last = nn.Sequential(nn.Conv2d(channels, 1280, 1), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True))
        if cifar:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(1280, num_classes, 1), nn.Flatten())
        else:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                                      nn.Linear(1280, num_classes))

    def _basis_group(self, index: int, channels: int, expansion: int) -> BasisGroup | None:
        if not self.plan.shares or index not in SHARED_STAGES:
            return None
        name = f"stage{SHARED_STAGES.index(index) + 1}"
        return self.shared_bases.new_group(name, [(expansion * channels, channels, 1, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.blocks(self.stem(x))))


register(Family(  # named MobileNetV + depth 2 by the zoo's grammar
    "mobilenetv", "MobileNetV", frozenset({"naive"}),
    build=lambda config: MobileNetV2(config.dataset, config.num_classes, config.plan),
    examples=lambda dataset: ["MobileNetV2", "MobileNetV2-Shared"],
    datasets=CIFAR100_AND_IMAGENET, depths=frozenset({2})))
