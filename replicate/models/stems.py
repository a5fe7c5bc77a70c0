"""Stems and heads shared by the model families (docs/paper.md: The networks): the only places where datasets differ."""
from __future__ import annotations

from torch import nn


def stem(dataset: str, out_channels: int, kernel: str = "3x3", norm: bool = True) -> nn.Sequential:
    """CIFAR: 3x3/1 conv (-> BN -> ReLU); ImageNet: 7x7/2 conv -> BN -> ReLU -> 3x3/2 max-pool."""
    if dataset == "imagenet" and kernel == "7x7":
        return nn.Sequential(nn.Conv2d(3, out_channels, 7, 2, 3, bias=False), nn.BatchNorm2d(out_channels),
                             nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
    layers: list[nn.Module] = [nn.Conv2d(3, out_channels, 3, 1, 1, bias=False)]
    if norm:
        layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def classifier_head(in_channels: int, num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    """Global average pool -> (dropout) -> Linear."""
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(in_channels, num_classes))
    return nn.Sequential(*layers)
