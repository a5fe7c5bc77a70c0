"""ResNet and ResNeXt families (docs/paper.md: The method; The networks).

One network class covers the CIFAR-10 ResNets (16-wide, option-A shortcuts), the 64-wide ResNet18/34 of
CIFAR-100 and ImageNet (1x1-conv shortcuts), ResNet50 of CIFAR-100 and ResNeXt50-32x4d (ResNet50/101 on
ImageNet are ``bottleneck.py``'s). In every stage the first block is original;
the other blocks realise their stride-1 C->C 3x3 convolutions as the :class:`SharingLayout` says.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..zoo import ModelConfig, SharingLayout
from ..zoo.families import RESNET64_BLOCKS
from .blocks import BasisBank, BasisGroup, DecomposedConv, add_relu, sharing_chunks
from .registry import register_builder
from .stems import classifier_head, stem


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut of the CIFAR-10 ResNets: subsample by 2, zero-pad C/4 channels each side."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.pad = out_channels // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


def projection_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN -> + shortcut -> ReLU, whatever the convs are made of."""

    def __init__(self, conv1: nn.Module, conv2: nn.Module, width: int,
                 shortcut: nn.Module | None = None, norm1: bool = True) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2
        self.bn1 = nn.BatchNorm2d(width) if norm1 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = conv_norm(self.conv1, self.bn1, x, relu=True)
        return conv_norm(self.conv2, self.bn2, out, residual=self.shortcut(x), relu=True)


def conv_norm(conv: nn.Module, norm: nn.Module, x: torch.Tensor, *, residual: torch.Tensor | None = None,
              relu: bool = False) -> torch.Tensor:
    """``relu(norm(conv(x)) + residual)``; a decomposed conv receives the rest so that it can fuse it."""
    if isinstance(conv, DecomposedConv):
        return conv(x, output_norm=norm, residual=residual, relu=relu)
    return add_relu(norm(conv(x)), residual, relu)


class Bottleneck(nn.Module):
    """1x1 -> BN -> ReLU -> middle (3x3 conv, BN, ReLU) -> 1x1 -> BN -> + shortcut -> ReLU."""

    def __init__(self, in_channels: int, width: int, out_channels: int, middle: nn.Module,
                 middle_channels: int, shortcut: nn.Module | None = None, conv3: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.middle = middle
        self.conv3 = conv3 if conv3 is not None else nn.Conv2d(middle_channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(self.middle(out)))
        return F.relu(out + self.shortcut(x))


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, groups=groups, bias=False)


class ResNet(nn.Module):
    """A residual network whose repeated blocks follow a sharing layout.

    Args:
        blocks: blocks per stage, e.g. (5, 5, 5) for CIFAR-10 ResNet32, (3, 4, 6, 3) for ResNet34.
        width: channels of stage 1 (16 or 64); stage k has ``width * 2**(k-1)``.
        dataset: ``cifar10`` | ``cifar100`` | ``imagenet`` (stem, shortcut option and classes).
        layout: how the non-first blocks of each stage realise their 3x3 convolutions.
        bottleneck: use bottleneck blocks (ResNet50, ResNeXt) with ``groups`` x ``base_width`` middles.
    """

    def __init__(self, blocks: tuple[int, ...], width: int, dataset: str, num_classes: int,
                 layout: SharingLayout = SharingLayout(), bottleneck: bool = False, groups: int = 1,
                 base_width: int = 64, kaiming_init: bool = True) -> None:
        super().__init__()
        self.layout, self.dataset = layout, dataset
        self.bottleneck, self.groups, self.base_width = bottleneck, groups, base_width
        self.shared_bases = BasisBank()
        self.stem = stem(dataset, width, kernel="3x3" if dataset != "imagenet" else "7x7")
        channels = width
        stages = []
        for index, count in enumerate(blocks):
            planes = width * 2 ** index
            stage, channels = self._stage(index, count, channels, planes, stride=1 if index == 0 else 2)
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.head = classifier_head(channels, num_classes)
        self._init_weights(kaiming_init)

    # -- construction -------------------------------------------------------------------------------------
    def _stage(self, index: int, count: int, in_channels: int, planes: int,
               stride: int) -> tuple[nn.Sequential, int]:
        blocks = [self._original_block(in_channels, planes, stride)]
        out_channels = planes * 4 if self.bottleneck else planes
        for chunk_index, chunk in enumerate(sharing_chunks(count - 1, self.layout.depth)):
            group = self._basis_group(index, chunk_index, out_channels, planes)
            blocks += [self._repeated_block(index, out_channels, planes, group) for _ in chunk]
        return nn.Sequential(*blocks), out_channels

    def _shortcut(self, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
        if stride == 1 and in_channels == out_channels:
            return None
        if self.dataset == "cifar10" and not self.bottleneck:
            return OptionAShortcut(out_channels)
        return projection_shortcut(in_channels, out_channels, stride)

    def _middle_width(self, planes: int) -> int:
        return int(planes * self.base_width / 64) * self.groups

    def _original_block(self, in_channels: int, planes: int, stride: int) -> nn.Module:
        if not self.bottleneck:
            return BasicBlock(conv3x3(in_channels, planes, stride), conv3x3(planes, planes), planes,
                              self._shortcut(in_channels, planes, stride))
        width, out_channels = self._middle_width(planes), planes * 4
        middle = nn.Sequential(conv3x3(width, width, stride, self.groups), nn.BatchNorm2d(width), nn.ReLU())
        return Bottleneck(in_channels, width, out_channels, middle, width,
                          self._shortcut(in_channels, out_channels, stride))

    def _basis_group(self, stage: int, chunk: int, channels: int, planes: int) -> BasisGroup | None:
        layout = self.layout
        if not layout.shares:
            return None
        name = f"stage{stage + 1}" + (f"_group{chunk + 1}" if layout.depth is not None else "")
        if layout.mode == "naive":  # whole 3x3 filters: one C->C conv per conv position
            return self.shared_bases.new_group(name, [(channels, channels, 3, 3)] * layout.bases)
        if self.bottleneck:  # ResNeXt: grouped basis over the middle width, same group count everywhere
            width = self._middle_width(planes)
            return self.shared_bases.new_group(
                name, [(layout.shared_rank * 2 ** stage, width, 3, 3)], groups=layout.shared_rank // 4)
        return self.shared_bases.new_group(
            name, [(layout.shared_rank * 2 ** stage, channels, 3, 3)] * layout.bases)

    def _repeated_block(self, stage: int, channels: int, planes: int, group: BasisGroup | None) -> nn.Module:
        layout = self.layout
        if layout.mode == "original":
            return self._original_block(channels, planes, 1)
        if self.bottleneck:
            return self._shared_bottleneck(stage, channels, planes, group)
        convs = [self._conv(stage, channels, position, group) for position in (0, 1)]
        return BasicBlock(*convs, channels, norm1=layout.unshared_bn or layout.mode == "naive")

    def _conv(self, stage: int, channels: int, position: int, group: BasisGroup | None) -> nn.Module:
        layout = self.layout
        if layout.mode == "naive":
            return group.conv(position, channels, channels, basis_norm=False, coefficients=False)
        unique_rank = layout.unique_rank * 2 ** stage
        options = dict(unique_rank=unique_rank, basis_norm=layout.unshared_bn)
        if group is None:
            return DecomposedConv(channels, channels, **options)
        return group.conv(position, channels, channels, **options)

    def _shared_bottleneck(self, stage: int, channels: int, planes: int, group: BasisGroup) -> nn.Module:
        unique_rank = self.layout.unique_rank * 2 ** stage
        width = self._middle_width(planes)
        middle = group.conv(0, width, width, unique_rank=unique_rank, unique_groups=unique_rank // 4,
                            basis_relu=True, coefficients=False)
        return Bottleneck(channels, width, channels, middle, middle.out_channels)

    def _init_weights(self, kaiming: bool) -> None:
        """docs/paper.md: The method: Kaiming fan-out convs, unit BNs, default Linear; then orthonormal shared bases."""
        if kaiming:
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
        if self.layout.mode == "decomposed":
            self.shared_bases.orthogonal_init_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


# -- the ResNet and ResNeXt builders of the zoo (their names: zoo/families.py) ------------------------------
def _build_resnet(config: ModelConfig) -> ResNet:
    if config.dataset == "cifar10":
        return ResNet(((config.depth - 2) // 6,) * 3, 16, config.dataset, config.num_classes, config.layout)
    return ResNet(RESNET64_BLOCKS[config.depth], 64, config.dataset, config.num_classes, config.layout,
                  bottleneck=config.depth >= 50)


def _build_resnext(config: ModelConfig) -> ResNet:
    return ResNet((3, 4, 6, 3), 64, config.dataset, config.num_classes, config.layout, bottleneck=True, groups=32,
                  base_width=4, kaiming_init=False)


register_builder("resnet", _build_resnet)
register_builder("resnext", _build_resnext)
