"""Model registry by the paper's names: ``create("ResNet56-S16U1*", "cifar10")``.

Grammar (case-insensitive): ``<Family><depth>[-<variant>]`` with variant

* (none)      original network
* ``Uu``      NonShared: decomposed, unique bases of rank u only
* ``Ss``      SharedOnly: one shared basis of rank s per stage (two on CIFAR-10, as the reference; ``Ss*``: two)
* ``SsUu``    SingleShared: [unique u ‖ shared s], one basis per stage for both conv positions
* ``SsUu*``   DoubleShared: one shared basis per conv position
* ``Shared``  naive sharing: whole 3x3 filters shared (ResNets), or MobileNetV2-Shared (shared expansions)
"""
from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, replace

from torch import nn

from ..errors import UserError
from .blocks import SharingPlan
from .densenet import DenseNet
from .mobilenet import MobileNetV2
from .resnet import ResNet

DATASETS = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
INPUT_SIZE = {"cifar10": 32, "cifar100": 32, "imagenet": 224}
RESNET64_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
RESNEXT_WIDTHS = (128, 256, 512, 1024)  # middle width of each ResNeXt50-32x4d stage

_NAME = re.compile(r"^(?P<family>resnext|resnet|densenet|mobilenetv)(?P<depth>\d+)(?:-32x4d)?"
                   r"(?:-(?P<variant>.+))?$", re.IGNORECASE)
_RANKS = re.compile(r"^(?:s(?P<s>\d+))?(?:u(?P<u>\d+))?(?P<double>\*)?$", re.IGNORECASE)
_DISPLAY = {"resnet": "ResNet", "resnext": "ResNeXt", "densenet": "DenseNet", "mobilenetv": "MobileNetV"}


class ModelError(UserError, ValueError):
    """A model name or configuration that cannot be built; the message says why and what would work."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model of the zoo; ``name`` is the canonical paper notation."""

    name: str
    family: str  # resnet | resnext | densenet | mobilenetv
    depth: int
    dataset: str
    variant: str  # original | nonshared | sharedonly | single | double | naive
    plan: SharingPlan

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset]

    @property
    def input_size(self) -> int:
        return INPUT_SIZE[self.dataset]


def example_names(dataset: str) -> list[str]:
    """The paper's models for ``dataset`` (what ``list_models`` shows and error messages suggest)."""
    if dataset == "cifar10":
        bases = ["ResNet20", "ResNet32", "ResNet44", "ResNet56", "ResNet110"]
        shared = [f"ResNet{d}-{v}" for d in (32, 56) for v in ("U1", "S16", "S8U1", "S16U1", "S16U1*", "Shared")]
        return bases + shared
    names = ["ResNet18", "ResNet34", "ResNet50", "DenseNet121", "ResNeXt50", "MobileNetV2", "MobileNetV2-Shared"]
    names += [f"ResNet34-{v}" for v in ("U1", "S16", "S8U1", "S16U1", "S32U1", "S32U1*", "S48U1*", "Shared")]
    if dataset == "cifar100":
        names += ["DenseNet121-S16U1", "ResNeXt50-S64U4"]
    return names


def _fail(problem: str, dataset: str, attempted: str = "") -> None:
    close = difflib.get_close_matches(attempted, example_names(dataset), n=3, cutoff=0.5) if attempted else []
    hint = f"; closest valid names: {', '.join(close)}" if close else \
        f"; valid names include {', '.join(example_names(dataset)[:8])}, …"
    raise ModelError(problem + hint)


def parse(name: str, dataset: str, sharing_depth: int | None = None, unshared_bn: bool = True) -> ModelConfig:
    """Validate a paper-notation name for ``dataset`` and resolve it into a :class:`ModelConfig`."""
    if dataset not in DATASETS:
        raise ModelError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    match = _NAME.match(name.strip())
    if not match:
        _fail(f"unknown model name {name!r}", dataset, name)
    family, depth = match["family"].lower(), int(match["depth"])
    _check_family(family, depth, dataset, name)
    variant, plan = _parse_variant(match["variant"], family, dataset, name)
    if sharing_depth is not None:
        if family != "resnet" or not plan.shares or sharing_depth < 1:
            _fail(f"sharing depth {sharing_depth} does not apply to {name!r}: it needs a shared ResNet and a "
                  f"depth >= 1", dataset, name)
        plan = replace(plan, depth=sharing_depth)
    if not unshared_bn:
        if family != "resnet" or plan.mode != "decomposed":
            _fail(f"unshared_bn=False (SPEC §5 BatchNorm ablation) needs a decomposed ResNet, not {name!r}",
                  dataset, name)
        plan = replace(plan, unshared_bn=False)
    display = f"{_DISPLAY[family]}{depth}" + (f"-{match['variant']}" if match["variant"] else "")
    config = ModelConfig(_canonical(display), family, depth, dataset, variant, plan)
    _check_ranks(config, name)
    return config


def _canonical(display: str) -> str:
    head, _, variant = display.partition("-")
    return head + ("-" + ("Shared" if variant.lower() == "shared" else variant.upper()) if variant else "")


def _check_family(family: str, depth: int, dataset: str, name: str) -> None:
    if family == "resnet" and dataset == "cifar10":
        if (depth - 2) % 6 or depth < 8:
            _fail(f"CIFAR-10 ResNets have depth 6n+2 (20, 32, 44, 56, 110, …), not {depth}", dataset, name)
        return
    supported = {"resnet": RESNET64_BLOCKS, "densenet": {121}, "resnext": {50}, "mobilenetv": {2}}
    if dataset == "cifar10" or depth not in supported[family]:
        _fail(f"{name!r} is not in the zoo for {dataset}", dataset, name)


def _parse_variant(text: str | None, family: str, dataset: str, name: str) -> tuple[str, SharingPlan]:
    if text is None:
        return "original", SharingPlan()
    if text.lower() == "shared":
        if family not in ("resnet", "mobilenetv"):
            _fail(f"{name!r}: naive whole-filter sharing exists for ResNets and MobileNetV2 only", dataset, name)
        return "naive", SharingPlan("naive", bases=2 if family == "resnet" else 1)
    ranks = _RANKS.match(text)
    if not ranks or not (ranks["s"] or ranks["u"]):
        _fail(f"{name!r}: unknown variant {text!r} (expected Uu, Ss, SsUu, SsUu* or Shared)", dataset, name)
    s, u, double = int(ranks["s"] or 0), int(ranks["u"] or 0), bool(ranks["double"])
    if (ranks["s"] and s <= 0) or (ranks["u"] and u <= 0):
        _fail(f"{name!r}: ranks must be >= 1", dataset, name)
    if double and not s:
        _fail(f"{name!r}: '*' (two shared bases) needs a shared rank", dataset, name)
    variant = "nonshared" if not s else "sharedonly" if not u else "double" if double else "single"
    allowed = {"resnet": {"nonshared", "sharedonly", "single", "double"}, "densenet": {"single"},
               "resnext": {"single"}, "mobilenetv": set()}[family]
    if variant not in allowed:
        _fail(f"{name!r}: {_DISPLAY[family]} has no {variant} variant", dataset, name)
    bases = 2 if double or (variant == "sharedonly" and dataset == "cifar10") else 1
    return variant, SharingPlan("decomposed", shared_rank=s, unique_rank=u, bases=bases)


def _check_ranks(config: ModelConfig, name: str) -> None:
    """Reject plans the network cannot realise: ResNeXt group counts must divide widths and ranks (§3.5)."""
    plan = config.plan
    if config.dataset == "cifar10" and config.depth < 14 and config.variant != "original":
        _fail(f"{name!r}: sharing needs at least two blocks per stage (depth >= 14)", config.dataset, name)
    if config.family == "resnet" and config.depth == 50 and config.variant != "original":
        _fail(f"{name!r}: ResNet50 is a baseline only (original bottleneck network)", config.dataset, name)
    if config.family != "resnext" or config.variant == "original":
        return
    shared_groups = plan.shared_rank // 4
    for stage, width in enumerate(RESNEXT_WIDTHS):
        unique, shared = plan.unique_rank * 2 ** stage, plan.shared_rank * 2 ** stage
        for what, rank, groups in (("unique", unique, unique // 4), ("shared", shared, shared_groups)):
            if groups < 1 or rank % groups or width % groups:
                _fail(f"{name!r}: ResNeXt {what} basis of rank {rank} in stage {stage + 1} has group count "
                      f"{groups}, which must be >= 1 and divide {rank} and {width}", config.dataset, name)


def build(config: ModelConfig) -> nn.Module:
    """Instantiate the network a :class:`ModelConfig` describes."""
    classes, plan = config.num_classes, config.plan
    if config.family == "resnet" and config.dataset == "cifar10":
        model = ResNet(((config.depth - 2) // 6,) * 3, 16, config.dataset, classes, plan)
    elif config.family == "resnet":
        model = ResNet(RESNET64_BLOCKS[config.depth], 64, config.dataset, classes, plan,
                       bottleneck=config.depth >= 50)
    elif config.family == "resnext":
        model = ResNet((3, 4, 6, 3), 64, config.dataset, classes, plan, bottleneck=True, groups=32,
                       base_width=4, kaiming_init=False)
    elif config.family == "densenet":
        model = DenseNet((6, 12, 24, 16), config.dataset, classes, plan)
    else:
        model = MobileNetV2(config.dataset, classes, plan)
    model.config = config
    return model


def create(name: str, dataset: str, *, sharing_depth: int | None = None, unshared_bn: bool = True) -> nn.Module:
    """Build a model of the zoo by its paper name; raises :class:`ModelError` with a one-line reason."""
    return build(parse(name, dataset, sharing_depth=sharing_depth, unshared_bn=unshared_bn))


def list_models(dataset: str, pattern: str = "*") -> list[str]:
    """The paper's model names for ``dataset`` that match a shell-style ``pattern``."""
    return [n for n in example_names(dataset) if fnmatch.fnmatch(n.lower(), pattern.lower())]
