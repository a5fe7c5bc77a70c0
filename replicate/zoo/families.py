"""The zoo's families as names: depths, datasets, variants and the rules a name must meet, without torch.

Each declaration here has a network builder of the same key in ``replicate.models`` (``register_builder``
in the family's module); what a family can be called is decided here, how it is built there. The order of
the declarations is the order :func:`~replicate.zoo.identity.example_names` lists the paper's models in.
"""
from __future__ import annotations

from dataclasses import replace

from ..catalog import ZOO_DATASETS
from .identity import VARIANTS, Family, ModelConfig, SharingLayout, default_layout, register

CIFAR100_AND_IMAGENET = frozenset(ZOO_DATASETS) - {"cifar10"}  # where the ImageNet-style families are

# -- ResNet (CIFAR-10 6n+2 ResNets; 64-wide ResNet18/34/50 of CIFAR-100 and ImageNet) -----------------------
RESNET64_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def _resnet_layout(variant: str, shared: int, unique: int, double: bool, dataset: str) -> SharingLayout:
    """Naive sharing shares both convs of a block; the CIFAR-10 SharedOnly reference has two bases (docs/paper.md: The method)."""
    if variant == "naive":
        return SharingLayout("naive", bases=2)
    layout = default_layout(variant, shared, unique, double, dataset)
    return replace(layout, bases=2) if variant == "sharedonly" and dataset == "cifar10" else layout


def _resnet_problem(config: ModelConfig) -> str | None:
    if config.dataset == "cifar10":
        if (config.depth - 2) % 6 or config.depth < 8:
            return f"CIFAR-10 ResNets have depth 6n+2 (20, 32, 44, 56, 110, …), not {config.depth}"
        if config.depth < 14 and config.variant != "original":
            return "sharing needs at least two blocks per stage (depth >= 14)"
        return None
    if config.depth not in RESNET64_BLOCKS:  # the zoo's ResNet depths depend on the dataset
        return f"not in the zoo for {config.dataset}"
    if config.depth == 50 and config.variant != "original":
        return "ResNet50 is a baseline only (original bottleneck network)"
    return None


def _resnet_examples(dataset: str) -> list[str]:
    if dataset == "cifar10":
        shared = [f"ResNet{d}-{v}" for d in (32, 56) for v in ("U1", "S16", "S8U1", "S16U1", "S16U1*", "Shared")]
        return ["ResNet20", "ResNet32", "ResNet44", "ResNet56", "ResNet110"] + shared
    return ["ResNet18", "ResNet34"] + ["ResNet50"] * (dataset == "cifar100") + [
        f"ResNet34-{v}" for v in ("U1", "S16", "S8U1", "S16U1", "S32U1", "S32U1*", "S48U1*", "Shared")]


register(Family("resnet", "ResNet", frozenset(VARIANTS), _resnet_examples, problem=_resnet_problem,
                layout=_resnet_layout, options=frozenset({"sharing_depth", "unshared_bn"})))

# -- ResNeXt50-32x4d --------------------------------------------------------------------------------------
RESNEXT_WIDTHS = (128, 256, 512, 1024)  # middle width of each ResNeXt50-32x4d stage


def _resnext_problem(config: ModelConfig) -> str | None:
    """Group counts must be >= 1 and divide widths and ranks (docs/paper.md: The networks)."""
    if config.variant == "original":
        return None
    shared_groups = config.shared_rank // 4
    for stage, width in enumerate(RESNEXT_WIDTHS):
        unique, shared = config.unique_rank * 2 ** stage, config.shared_rank * 2 ** stage
        for what, rank, groups in (("unique", unique, unique // 4), ("shared", shared, shared_groups)):
            if groups < 1 or rank % groups or width % groups:
                return (f"ResNeXt {what} basis of rank {rank} in stage {stage + 1} has group count {groups}, "
                        f"which must be >= 1 and divide {rank} and {width}")
    return None


register(Family("resnext", "ResNeXt", frozenset({"original", "single"}),
                lambda dataset: ["ResNeXt50"] + (["ResNeXt50-S64U4"] if dataset == "cifar100" else []),
                datasets=CIFAR100_AND_IMAGENET, depths=frozenset({50}), problem=_resnext_problem))

# -- ResNet50/101 on ImageNet and their published-version shared forms -------------------------------------
BOTTLENECK_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

register(Family(
    "resnet", "ResNet", frozenset({"original", "naive", "naive2"}),
    examples=lambda dataset: [f"ResNet{d}{v}" for d in BOTTLENECK_BLOCKS for v in ("", "-Shared", "-Shared++")],
    datasets=frozenset({"imagenet"}), depths=frozenset(BOTTLENECK_BLOCKS), builder="resnet-bottleneck"))

# -- DenseNet-BC 121 ------------------------------------------------------------------------------------------
register(Family(
    "densenet", "DenseNet", frozenset({"single"}),
    examples=lambda dataset: ["DenseNet121"] + (["DenseNet121-S16U1"] if dataset == "cifar100" else []),
    datasets=CIFAR100_AND_IMAGENET, depths=frozenset({121})))


# -- MobileNetV2 ------------------------------------------------------------------------------------------------
def _mobilenet_problem(config: ModelConfig) -> str | None:
    if config.variant == "naive2-2020" and config.dataset != "imagenet":
        return "on CIFAR-100 the 2020 network (no attention) is MobileNetV2-Shared++"
    return None


register(Family(  # named MobileNetV + depth 2 by the zoo's grammar
    "mobilenetv", "MobileNetV", frozenset({"naive", "naive2", "naive2-2020"}),
    examples=lambda dataset: ["MobileNetV2", "MobileNetV2-Shared", "MobileNetV2-Shared++"]
    + ["MobileNetV2-SharedDouble"] * (dataset == "imagenet"),
    datasets=CIFAR100_AND_IMAGENET, depths=frozenset({2}), problem=_mobilenet_problem))
