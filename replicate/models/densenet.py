"""DenseNet-BC (growth 32, compression 0.5) and its shared variant (docs/paper.md: The networks).

In the shared variant *every* bottleneck layer, the first of each dense block included, computes its 3x3
convolution through a [unique ‖ shared] basis of the dense block's shared basis; ranks are not scaled
(every 3x3 input has 4·growth = 128 channels). The reference builds four bases but its dense block 4 reuses
basis 3 (basis 4 is counted and regularised, never called); ``reuse_basis3_in_block4`` reproduces that.
"""
from __future__ import annotations

import torch
from torch import nn

from ..zoo import ModelConfig, SharingLayout
from .blocks import BasisBank, BasisGroup
from .registry import register_builder
from .stems import classifier_head, stem


class DenseLayer(nn.Module):
    """BN -> ReLU -> 1x1 (C -> 4k) -> BN -> ReLU -> 3x3 (4k -> k); output = concat(input, new k)."""

    def __init__(self, in_channels: int, growth: int, conv2: nn.Module | None = None) -> None:
        super().__init__()
        inner = 4 * growth
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv2 = conv2 if conv2 is not None else nn.Conv2d(inner, growth, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


class Transition(nn.Sequential):
    """BN -> 1x1 conv -> 2x2 average pool; the reference has no ReLU here."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.AvgPool2d(2))


class DenseNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], dataset: str, num_classes: int,
                 layout: SharingLayout = SharingLayout(), growth: int = 32, reduction: float = 0.5,
                 reuse_basis3_in_block4: bool = True) -> None:
        super().__init__()
        self.layout, self.dataset = layout, dataset
        self.shared_bases = BasisBank()
        groups = self._basis_groups(len(blocks), growth, reuse_basis3_in_block4)
        channels = 2 * growth
        self.stem = stem(dataset, channels, kernel="7x7" if dataset == "imagenet" else "3x3",
                         norm=dataset == "imagenet")
        features: list[nn.Module] = []
        for index, count in enumerate(blocks):
            for _ in range(count):
                features.append(DenseLayer(channels, growth, self._conv(groups[index], growth)))
                channels += growth
            if index < len(blocks) - 1:
                features.append(Transition(channels, int(channels * reduction)))
                channels = int(channels * reduction)
        self.features = nn.Sequential(*features, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.head = classifier_head(channels, num_classes)

    def _basis_groups(self, count: int, growth: int, reuse: bool) -> list[BasisGroup | None]:
        if not self.layout.shares:
            return [None] * count
        shape = (self.layout.shared_rank, 4 * growth, 3, 3)
        groups = [self.shared_bases.new_group(f"block{i + 1}", [shape]) for i in range(count)]
        if reuse and count == 4:
            groups[3] = groups[2]
        return groups

    def _conv(self, group: BasisGroup | None, growth: int) -> nn.Module | None:
        if group is None:
            return None
        return group.conv(0, 4 * growth, growth, unique_rank=self.layout.unique_rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


def _build(config: ModelConfig) -> DenseNet:
    return DenseNet((6, 12, 24, 16), config.dataset, config.num_classes, config.layout)


register_builder("densenet", _build)
