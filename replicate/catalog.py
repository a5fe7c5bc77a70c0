"""What the suite knows of each dataset, in one place and without torch: one :class:`DatasetInfo` per dataset.

Every module that names, sizes, counts or normalises a dataset reads it here: the zoo (classes, input size),
the data layer (which loader, normalisation, synthetic size), the plan (images per epoch), the evaluator and
the checkpoint reader (which datasets have networks), tables and figures (names as printed). Adding a dataset
is one entry here plus its loading function in ``datasets.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    """The facts of one dataset that do not depend on its files."""

    key: str  # as in specs, run configs and folder names
    display: str  # as printed in tables, figures and claims
    classes: int
    image_size: int  # the side the networks see (ImageNet: the training crop; Fashion-MNIST: 28 padded to 32)
    train_images: int  # the official training split (before a clean protocol holds a validation split out)
    test_images: int  # the official test split (ImageNet: its validation set, which the paper reports on)
    mean: tuple[float, ...]  # per-channel normalisation of the images the networks see (three channels)
    std: tuple[float, ...]
    loader: str  # which loading function of the data layer reads it: cifar | fashion | imagenet
    in_memory: bool  # the whole dataset fits in memory as one tensor (device loader possible)
    synthetic_size: int  # the side of its synthetic stand-in (smoke profile; ImageNet smaller than the crop)
    validation: int  # training images the clean protocol holds out by default (its recipes' validation split)
    zoo: bool = True  # the zoo has networks for it (Fashion-MNIST is trained by CIFAR-10 networks)
    stands_in_for: str | None = None  # the dataset whose rows a proxy profile trains on this one instead
    top5: bool = False  # the paper reports top-5 error too (tables show it)
    channels: int = 3  # what the networks see (Fashion-MNIST's grey channel is repeated)


DATASETS: dict[str, DatasetInfo] = {info.key: info for info in (
    # CIFAR-10 uses the ImageNet statistics: a quirk of the reference (docs/paper.md: Training recipes;
    # Implementation decisions), kept on purpose.
    DatasetInfo("cifar10", "CIFAR-10", 10, 32, 50_000, 10_000, IMAGENET_MEAN, IMAGENET_STD, "cifar", True, 32,
                5_000),
    DatasetInfo("cifar100", "CIFAR-100", 100, 32, 50_000, 10_000, (0.507, 0.487, 0.441), (0.267, 0.256, 0.276),
                "cifar", True, 32, 5_000),
    DatasetInfo("imagenet", "ImageNet", 1000, 224, 1_281_167, 50_000, IMAGENET_MEAN, IMAGENET_STD, "imagenet",
                False, 64, 50_000, top5=True),
    DatasetInfo("fashion-mnist", "Fashion-MNIST", 10, 32, 60_000, 10_000, (0.2860,) * 3, (0.3530,) * 3,
                "fashion", True, 32, 5_000, zoo=False,
                stands_in_for="cifar10"),
)}
ZOO_DATASETS = tuple(key for key, info in DATASETS.items() if info.zoo)  # what a network can be built for


def info(key: str) -> DatasetInfo:
    """The facts of dataset ``key``; ``KeyError`` naming the known keys otherwise."""
    try:
        return DATASETS[key]
    except KeyError:
        raise KeyError(f"unknown dataset {key!r}; known: {', '.join(DATASETS)}") from None


def display_name(key: str) -> str:
    """The printed name of a dataset key ("cifar10" -> "CIFAR-10"); synthetic data and unknown keys as given."""
    if key == "synthetic":
        return "synthetic data"
    found = DATASETS.get(key)
    return found.display if found else key
