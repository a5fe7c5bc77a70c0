"""MobileNetV2 and MobileNetV2-Shared as the reference builds them (docs/paper.md: The networks).

Reference quirks kept so that sizes match: every block has an expansion 1x1 conv (also when t = 1); the
stem and the 1280-wide conv have biases; ReLU inside blocks, ReLU6 in the stem and last conv. CIFAR: a 1x1
stem with padding 1 (34x34 maps), stage 6 at stride 1, 1x1-conv+BN shortcuts on stride-1 blocks that change
width, and a 1x1-conv classifier with bias. MobileNetV2-Shared replaces the expansion conv of blocks 2..n of
stages 3–6 by the stage's shared 1x1 conv (no unique part, no coefficients, no orthogonal init).

The published version's MobileNetV2-Shared++ shares the projection 1x1 conv of those blocks too (a block owns
only its depthwise conv and BatchNorms); on ImageNet each such block gates its output channels with
efficient channel attention (:class:`ChannelAttention`) before the residual sum. MobileNetV2-SharedDouble
is the same ImageNet network without attention, as the 2020 code built it; on CIFAR-100 there is no
attention, and the network is called MobileNetV2-Shared++ only. The two kinds of shared conv are
regularised as two pooled means (docs/paper.md: The published version's networks).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..zoo import ModelConfig, SharingLayout
from .blocks import BasisBank, BasisGroup
from .registry import register_builder

# (expansion t, output channels, repeats, stride on CIFAR, stride on ImageNet)
STAGES = ((1, 16, 1, 1, 1), (6, 24, 2, 2, 2), (6, 32, 3, 2, 2), (6, 64, 4, 2, 2),
          (6, 96, 3, 1, 1), (6, 160, 3, 1, 2), (6, 320, 1, 1, 1))
SHARED_STAGES = (2, 3, 4, 5)  # zero-based: stages 3–6 of the table


class ChannelAttention(nn.Module):
    """Efficient channel attention: ``y_c * sigmoid(w * m)_c``, m the spatial means, ``*`` a 1-D convolution
    of odd kernel ``k`` along the channel axis (zero padding, no bias); ``k`` weights, nothing else."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        means = self.pool(y).flatten(2).transpose(1, 2)  # N x 1 x C: the channels as a sequence
        gate = torch.sigmoid(self.conv(means)).transpose(1, 2).unsqueeze(-1)  # N x C x 1 x 1
        return y * gate


def attention_kernel(channels: int) -> int:
    """The reference's kernel by width: 1 below 96 channels, else 3 (not ECA-Net's logarithmic rule)."""
    return 1 if channels < 96 else 3


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int, cifar: bool,
                 expand: nn.Module | None = None, project: nn.Module | None = None,
                 attention: nn.Module | None = None) -> None:
        super().__init__()
        hidden = expansion * in_channels
        self.expand = expand if expand is not None else nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.project = project if project is not None else nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.attention = attention
        self.residual = stride == 1 and (cifar or in_channels == out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if self.residual and in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.expand(x)))
        out = F.relu(self.bn2(self.depthwise(out)))
        out = self.bn3(self.project(out))
        if self.attention is not None:
            out = self.attention(out)
        return out + self.shortcut(x) if self.residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 as the reference builds it; ``layout.bases`` shared 1x1 convs per stage 3–6 (1: expansion,
    2: expansion and projection), ``attention`` in the blocks that share two (ImageNet Shared++)."""

    def __init__(self, dataset: str, num_classes: int, layout: SharingLayout = SharingLayout(),
                 attention: bool = False) -> None:
        super().__init__()
        self.layout, self.dataset = layout, dataset
        cifar = dataset != "imagenet"
        self.shared_bases = BasisBank()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 1, 1, 1) if cifar else nn.Conv2d(3, 32, 3, 2, 1),
            nn.BatchNorm2d(32), nn.ReLU6(inplace=True))
        blocks, channels = [], 32
        for index, (t, out_channels, repeats, stride_cifar, stride_imagenet) in enumerate(STAGES):
            groups = self._basis_groups(index, out_channels, t)
            for repeat in range(repeats):
                stride = (stride_cifar if cifar else stride_imagenet) if repeat == 0 else 1
                shared = [group.conv(0, *shape, basis_norm=False, coefficients=False) for group, shape in
                          zip(groups, ((channels, channels * t), (channels * t, out_channels)))] if repeat else []
                gate = ChannelAttention(attention_kernel(out_channels)) if attention and len(shared) == 2 else None
                blocks.append(InvertedResidual(channels, out_channels, t, stride, cifar, *shared, attention=gate))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.last = nn.Sequential(nn.Conv2d(channels, 1280, 1), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True))
        if cifar:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(1280, num_classes, 1), nn.Flatten())
        else:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                                      nn.Linear(1280, num_classes))

    def _basis_groups(self, index: int, channels: int, expansion: int) -> list[BasisGroup]:
        """The stage's shared expansion (and projection) 1x1 convs, each its own group and pool."""
        if not self.layout.shares or index not in SHARED_STAGES:
            return []
        name = f"stage{SHARED_STAGES.index(index) + 1}"
        if self.layout.bases == 1:
            return [self.shared_bases.new_group(name, [(expansion * channels, channels, 1, 1)])]
        shapes = ((expansion * channels, channels, 1, 1), (channels, expansion * channels, 1, 1))
        return [self.shared_bases.new_group(f"{name}_{i}", [shape], pool=i) for i, shape in enumerate(shapes, 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.blocks(self.stem(x))))


def _build(config: ModelConfig) -> MobileNetV2:
    attention = config.variant == "naive2" and config.dataset == "imagenet"
    return MobileNetV2(config.dataset, config.num_classes, config.layout, attention=attention)


register_builder("mobilenetv", _build)
