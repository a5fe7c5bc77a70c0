"""What the suite knows of each dataset, in one place and without torch: names as printed, classes, sizes.

Every module that names, sizes or describes a dataset reads it here (the data layer adds how to load it).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    key: str  # as in specs, run configs and folder names
    display: str  # as printed in tables, figures and claims
    classes: int
    image_size: int  # the side the networks see (ImageNet: the training crop)


DATASETS: dict[str, DatasetInfo] = {info.key: info for info in (
    DatasetInfo("cifar10", "CIFAR-10", 10, 32),
    DatasetInfo("cifar100", "CIFAR-100", 100, 32),
    DatasetInfo("imagenet", "ImageNet", 1000, 224),
    DatasetInfo("fashion-mnist", "Fashion-MNIST", 10, 32),  # 28 x 28 padded to CIFAR's 32
)}


def display_name(key: str) -> str:
    """The printed name of a dataset key ("cifar10" -> "CIFAR-10"); synthetic data and unknown keys as given."""
    if key == "synthetic":
        return "synthetic data"
    info = DATASETS.get(key)
    return info.display if info else key
