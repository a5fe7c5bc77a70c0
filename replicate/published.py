"""The published numbers (``data/published.yaml``): every printed figure, where it was printed, and its flags.

Data only: ``complexity`` checks the printed sizes against our counts, ``analysis`` the printed errors
against our runs. A :class:`Printed` figure knows its precision, so "matches" means "rounds to the printed
digits".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from importlib import resources

import yaml

UNITS = {"M": 10**6, "G": 10**9}


@dataclass(frozen=True)
class Printed:
    """A figure as printed, e.g. "5.87M": its value in units, unit and number of decimals."""

    text: str

    @property
    def value(self) -> float:
        return float(self.text[:-1])

    @property
    def unit(self) -> int:
        return UNITS[self.text[-1]]

    def matches(self, count: float, tolerance: float | None = None) -> bool:
        """Does ``count`` (in plain units) print as this figure (or lie within ``tolerance`` units)?"""
        ours = count / self.unit
        if tolerance is not None:
            return abs(ours - self.value) <= tolerance + 1e-12
        half_step = Decimal(1).scaleb(Decimal(self.text[:-1]).as_tuple().exponent) / 2
        return abs(Decimal(str(ours)) - Decimal(self.text[:-1])) <= half_step


@dataclass(frozen=True)
class Entry:
    """One published row: where it was printed, what was printed and which configuration it is."""

    source: str
    table: str
    label: str
    model: str
    dataset: str
    top1_err: float | None
    top5_err: float | None
    params: Printed | None
    flops: Printed | None
    flops_convention: str
    date: str
    tolerance: dict | None = None
    flag: dict | None = None
    note: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def flagged_fields(self) -> tuple[str, ...]:
        return tuple(self.flag.get("fields", ())) if self.flag else ()

    def reference(self) -> dict:
        """What a stored result records of the published row it reproduces."""
        return {"source": self.source, "label": self.label, "top1_err": self.top1_err, "top5_err": self.top5_err,
                "flagged": bool(self.flag)}


@dataclass(frozen=True)
class Source:
    """Where numbers were printed: a README of the authors' repository at a commit, or its figure."""

    key: str  # "f98cd9d", or "f98cd9d-graph" for the README's figure
    date: str
    kind: str  # readme | figure
    description: str
    flops_convention: str  # 2xMACs | MACs

    @property
    def citation(self) -> str:
        """How a table or figure names it: "authors' README at f98cd9d"."""
        commit = self.key.split("-")[0]
        return f"authors' README at {commit}" if self.kind == "readme" else f"authors' README graph at {commit}"


def to_flops(macs: int, convention: str) -> int:
    """A MAC count in a source's FLOPs convention: 2 x MACs (the 2020 READMEs and the graph) or MACs (2021)."""
    return 2 * macs if convention == "2xMACs" else macs


@lru_cache(maxsize=None)
def _data() -> dict:
    return yaml.safe_load(resources.files("replicate").joinpath("data/published.yaml").read_text())


@lru_cache(maxsize=None)
def sources() -> dict[str, Source]:
    return {key: Source(key, str(raw["date"]), raw["kind"], raw["description"], raw["flops_convention"])
            for key, raw in _data()["sources"].items()}


@lru_cache(maxsize=None)
def load() -> tuple[Entry, ...]:
    """Every published entry, in file order."""
    entries = []
    for raw in _data()["entries"]:
        source = sources()[raw["source"]]
        entries.append(Entry(
            source=raw["source"], table=raw["table"], label=raw["label"], model=raw["model"],
            dataset=raw["dataset"], top1_err=raw.get("top1_err"), top5_err=raw.get("top5_err"),
            params=Printed(raw["params"]) if raw.get("params") else None,
            flops=Printed(raw["flops"]) if raw.get("flops") else None,
            flops_convention=source.flops_convention, date=source.date,
            tolerance=raw.get("tolerance"), flag=raw.get("flag"), note=raw.get("note")))
    return tuple(entries)


def find(model: str, dataset: str, source: str | None = None) -> list[Entry]:
    """Published entries of a configuration (by our canonical name), optionally from one source."""
    return [e for e in load() if e.model.lower() == model.lower() and e.dataset == dataset
            and (source is None or e.source == source)]
