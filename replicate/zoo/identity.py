"""The model zoo by the paper's names, without torch: a :class:`ModelSpec` is a network's identity.

Grammar (case-insensitive): ``<Family><depth>[-<variant>]`` with variant

* (none)      original network
* ``Uu``      NonShared: decomposed, unique bases of rank u only
* ``Ss``      SharedOnly: one shared basis of rank s per stage (two on CIFAR-10, as the reference; ``Ss*``: two)
* ``SsUu``    SingleShared: [unique u ‖ shared s], one basis per stage for both conv positions
* ``SsUu*``   DoubleShared: one shared basis per conv position
* ``Shared``  naive sharing: whole 3x3 filters shared (ResNets), or MobileNetV2-Shared (shared expansions)
* ``Shared++`` whole-convolution sharing of two convolutions per block (the published version's ResNet50/101
  and MobileNetV2); ``SharedDouble``: the 2020 MobileNetV2 of that kind (no channel attention)

A family (ResNet, ResNeXt, DenseNet, MobileNetV2) is declared with :func:`register` in ``families.py``,
saying which depths, datasets and variants it has; nothing here names one. Parsing, identity and labels need
no network, so readers (plans, tables, status) import this and never torch; the networks' package
(``replicate.models``) registers each family's builder under the same key and builds what a spec names.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable

from ..catalog import DATASETS as CATALOG
from ..catalog import ZOO_DATASETS
from ..errors import UserError

VARIANTS = ("original", "nonshared", "sharedonly", "single", "double", "naive")
# Whole-convolution sharing by its printed spelling (lower case) -> variant; naive2: two shared convs per block.
NAIVE_VARIANTS = {"shared": "naive", "shared++": "naive2", "shareddouble": "naive2-2020"}
_NAIVE_SPELLING = {"naive": "Shared", "naive2": "Shared++", "naive2-2020": "SharedDouble"}

_NAME = re.compile(r"^(?P<family>[a-z]+)(?P<depth>\d+)(?P<suffix>-\d+x\d+d)?(?:-(?P<variant>.+))?$", re.IGNORECASE)
_RANKS = re.compile(r"^(?:s(?P<s>\d+))?(?:u(?P<u>\d+))?(?P<double>\*)?$", re.IGNORECASE)


class ModelError(UserError, ValueError):
    """A model name or configuration that cannot be built; the message says why and what would work."""


@dataclass(frozen=True)
class SharingLayout:
    """How the repeated (stride-1, C->C) convolutions of each stage are realised.

    Ranks are the base ranks of the paper's notation ``SsUu``; stage k of a ResNet/ResNeXt uses ``s*f_k``
    and ``u*f_k`` with f_k = 1, 2, 4, 8 (the notation of docs/paper.md).
    """

    mode: str = "original"  # original | decomposed | naive (whole-filter sharing)
    shared_rank: int = 0  # s; 0 = no shared basis (NonShared)
    unique_rank: int = 0  # u; 0 = no unique part (SharedOnly)
    bases: int = 1  # shared bases per group: 1 serves both conv positions, 2 = one per position (Double)
    depth: int | None = None  # consecutive decomposed blocks per basis; None = the whole stage
    unshared_bn: bool = True  # False removes basis-BN1, BN1 and basis-BN2 of decomposed blocks (docs/paper.md: Gradient-flow measurement)

    @property
    def shares(self) -> bool:
        return self.mode == "naive" or (self.mode == "decomposed" and self.shared_rank > 0)


def default_layout(variant: str, shared: int, unique: int, double: bool, dataset: str) -> SharingLayout:
    """One shared basis per group, two for DoubleShared: the layout most families follow."""
    if variant == "original":
        return SharingLayout()
    if variant in _NAIVE_SPELLING:  # whole convolutions: one per block (naive) or two (naive2)
        return SharingLayout("naive", bases=1 if variant == "naive" else 2)
    return SharingLayout("decomposed", shared_rank=shared, unique_rank=unique, bases=2 if double else 1)


def _buildable(config: "ModelConfig") -> str | None:
    """The default ``problem`` hook: the declared datasets and depths say all there is to check."""
    return None


@dataclass(frozen=True)
class Family:
    """What a model family contributes to the zoo's names; declared in ``families.py``.

    ``datasets`` and ``depths`` say where the zoo has the family (checked once, by the registry);
    ``problem(config)`` returns why a resolved configuration cannot be built otherwise (``None`` if it can);
    ``layout`` turns a parsed variant into the family's :class:`SharingLayout` (e.g. how many bases a SharedOnly
    stage has); ``options`` are the :class:`ModelSpec` options the family supports besides the name.
    """

    key: str  # lower-case name prefix: "resnet"
    display: str  # as printed: "ResNet"
    variants: frozenset[str]
    examples: Callable[[str], list[str]]  # the paper's names of this family for one of its datasets
    datasets: frozenset[str] = frozenset(ZOO_DATASETS)
    depths: frozenset[int] | None = None  # None: any depth (``problem`` checks what it must)
    problem: Callable[["ModelConfig"], str | None] = _buildable
    layout: Callable[[str, int, int, bool, str], SharingLayout] = default_layout
    options: frozenset[str] = frozenset()  # of {"sharing_depth", "unshared_bn"}
    builder: str | None = None  # None: ``key``

    def name_at(self, depth: int) -> str:
        """The family-and-depth name, e.g. ``ResNet56``: the one place it is spelled."""
        return f"{self.display}{depth}"

    def has(self, dataset: str, depth: int) -> bool:
        """Whether the zoo has this family at ``depth`` for ``dataset`` (before any family-specific rule)."""
        return dataset in self.datasets and (self.depths is None or depth in self.depths)

    @property
    def builder_key(self) -> str:
        """The key this family's network builder is registered under (``replicate.models``)."""
        return self.builder or self.key


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family to the zoo (called once, from ``families.py``).

    A name goes to the family that declares its depths and has the name's depth and dataset, else to the
    first registered with the name's prefix (which says what it cannot build).
    """
    FAMILIES[family.builder_key] = family
    return family


def _family_for(prefix: str, dataset: str, depth: int) -> Family | None:
    candidates = [family for family in FAMILIES.values() if family.key == prefix]
    specific = [family for family in candidates if family.depths is not None and family.has(dataset, depth)]
    return (specific or candidates or [None])[0]


@dataclass(frozen=True)
class ModelSpec:
    """The identity of a network: its name, dataset and the options that change it (frozen, validated).

    Everything that reports a size or cost (plans, tables, figures, the benchmark) and everything that
    builds a network takes one of these, so what is reported is what is trained. Constructing one checks
    it and makes the name canonical: ``ModelSpec("resnet56-s16u1*", "cifar10").name == "ResNet56-S16U1*"``.
    """

    name: str
    dataset: str
    sharing_depth: int | None = None  # consecutive decomposed blocks per basis; None = a whole stage
    unshared_bn: bool = True  # False removes the unshared BatchNorms of decomposed blocks (docs/paper.md: Gradient-flow measurement)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.config.name)

    @property
    def config(self) -> "ModelConfig":
        return _resolve(self.name, self.dataset, self.sharing_depth, self.unshared_bn)

    @property
    def is_default(self) -> bool:
        """No option changes the network the name alone describes (what the paper printed)."""
        return self.sharing_depth is None and self.unshared_bn

    @property
    def label(self) -> str:
        """The name and every option that differs from the name's network, e.g. ``ResNet56-S16U1, depth 2``."""
        parts = [self.name]
        if self.sharing_depth is not None:
            parts.append(f"sharing depth {self.sharing_depth}")
        if not self.unshared_bn:
            parts.append("no unshared BN")
        return ", ".join(parts)

    def at_depth(self, depth: int) -> "ModelSpec":
        """The same family, variant and options at another depth (the mini profile's shallower ResNets)."""
        variant = self.name.partition("-")[2]
        return replace(self, name=self.config.family.name_at(depth) + (f"-{variant}" if variant else ""))


@dataclass(frozen=True)
class ModelConfig:
    """A :class:`ModelSpec` resolved into what builds it: family, depth, variant and sharing layout."""

    name: str  # canonical
    dataset: str
    sharing_depth: int | None
    unshared_bn: bool
    family: Family
    depth: int
    variant: str  # one of VARIANTS
    layout: SharingLayout
    shared_rank: int
    unique_rank: int

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.name, self.dataset, self.sharing_depth, self.unshared_bn)

    @property
    def base_name(self) -> str:
        """The family and depth without the variant (``ResNet56``): what tables and figures group rows by."""
        return self.family.name_at(self.depth)

    @property
    def num_classes(self) -> int:
        return CATALOG[self.dataset].classes

    @property
    def input_size(self) -> int:
        return CATALOG[self.dataset].image_size


def example_names(dataset: str) -> list[str]:
    """The paper's models for ``dataset`` (what ``list_models`` shows and error messages suggest)."""
    return [name for family in FAMILIES.values() if dataset in family.datasets for name in family.examples(dataset)]


def _fail(problem: str, dataset: str, attempted: str) -> None:
    """Raise ``problem`` with the closest valid names for ``dataset`` (known: ``_resolve`` checked it first)."""
    examples = example_names(dataset)
    close = difflib.get_close_matches(attempted, examples, n=3, cutoff=0.5)
    hint = f"; closest valid names: {', '.join(close)}" if close else \
        f"; valid names include {', '.join(examples[:8])}, …" if examples else ""
    raise ModelError(problem + hint)


def parse(name: str, dataset: str, sharing_depth: int | None = None, unshared_bn: bool = True) -> ModelConfig:
    """Validate a paper-notation name (and options) for ``dataset`` and resolve it."""
    return ModelSpec(name, dataset, sharing_depth, unshared_bn).config


@lru_cache(maxsize=None)
def _resolve(name: str, dataset: str, sharing_depth: int | None, unshared_bn: bool) -> ModelConfig:
    """Validate and resolve (memoised: a spec is resolved every time something reports on it)."""
    if dataset not in ZOO_DATASETS:
        raise ModelError(f"unknown dataset {dataset!r}; choose one of {', '.join(ZOO_DATASETS)}")
    match = _NAME.match(name.strip())
    family = _family_for(match["family"].lower(), dataset, int(match["depth"])) if match else None
    if family is None:
        _fail(f"unknown model name {name!r}", dataset, name)
    depth = int(match["depth"])
    variant, shared, unique, double = _parse_variant(match["variant"], family, dataset, name)
    layout = family.layout(variant, shared, unique, double, dataset)
    layout = _with_options(layout, family, sharing_depth, unshared_bn, dataset, name)
    canonical = family.name_at(depth) + (f"-{_canonical_variant(match['variant'])}" if match["variant"] else "")
    config = ModelConfig(canonical, dataset, sharing_depth, unshared_bn, family, depth, variant, layout, shared,
                         unique)
    problem = family.problem(config) if family.has(dataset, depth) else f"not in the zoo for {dataset}"
    if problem:
        _fail(f"{name!r}: {problem}", dataset, name)
    return config


def _canonical_variant(text: str) -> str:
    naive = NAIVE_VARIANTS.get(text.lower())
    return _NAIVE_SPELLING[naive] if naive else text.upper()


def _parse_variant(text: str | None, family: Family, dataset: str, name: str) -> tuple[str, int, int, bool]:
    if text is None:
        return "original", 0, 0, False
    if text.lower() in NAIVE_VARIANTS:
        variant, shared, unique, double = NAIVE_VARIANTS[text.lower()], 0, 0, False
    else:
        ranks = _RANKS.match(text)
        if not ranks or not (ranks["s"] or ranks["u"]):
            _fail(f"{name!r}: unknown variant {text!r} (expected Uu, Ss, SsUu, SsUu*, Shared or Shared++)",
                  dataset, name)
        shared, unique, double = int(ranks["s"] or 0), int(ranks["u"] or 0), bool(ranks["double"])
        if (ranks["s"] and shared <= 0) or (ranks["u"] and unique <= 0):
            _fail(f"{name!r}: ranks must be >= 1", dataset, name)
        if double and not shared:
            _fail(f"{name!r}: '*' (two shared bases) needs a shared rank", dataset, name)
        variant = "nonshared" if not shared else "sharedonly" if not unique else "double" if double else "single"
    if variant not in family.variants:
        what = ("no naive whole-filter sharing" if variant == "naive" else
                f"no -{_NAIVE_SPELLING[variant]} variant" if variant in _NAIVE_SPELLING else f"no {variant} variant")
        _fail(f"{name!r}: {family.display} has {what}", dataset, name)
    return variant, shared, unique, double


def _with_options(layout: SharingLayout, family: Family, sharing_depth: int | None, unshared_bn: bool,
                  dataset: str, name: str) -> SharingLayout:
    if sharing_depth is not None:
        if "sharing_depth" not in family.options or not layout.shares or sharing_depth < 1:
            _fail(f"sharing depth {sharing_depth} does not apply to {name!r}: it needs a shared ResNet and a "
                  f"depth >= 1", dataset, name)
        layout = replace(layout, depth=sharing_depth)
    if not unshared_bn:
        if "unshared_bn" not in family.options or layout.mode != "decomposed":
            _fail(f"unshared_bn=False (the BatchNorm ablation) needs a decomposed ResNet, not {name!r}",
                  dataset, name)
        layout = replace(layout, unshared_bn=False)
    return layout


def list_models(dataset: str, pattern: str = "*") -> list[str]:
    """The paper's model names for ``dataset`` that match a shell-style ``pattern``."""
    return [n for n in example_names(dataset) if fnmatch.fnmatch(n.lower(), pattern.lower())]
