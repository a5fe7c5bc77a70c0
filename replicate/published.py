"""The published numbers (``data/published.yaml``) and their check against our complexity counts.

Each printed figure is compared under its own convention: 2020 READMEs and the figure give FLOPs as
2 x MACs, the 2021 README as MACs (SPEC §3.7, §6.5). A README figure matches when our count rounds to the
printed digits; a digitised figure point when it lies within the digitisation tolerance. Rows that SPEC §6.6
shows to contradict the code carry a flag and are reported as ``flagged`` with its explanation, provided the
figures the flag does not concern still match.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from importlib import resources

import pandas as pd
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


@lru_cache(maxsize=None)
def load() -> tuple[Entry, ...]:
    """Every published entry, in file order."""
    text = resources.files("replicate").joinpath("data/published.yaml").read_text()
    data = yaml.safe_load(text)
    sources = data["sources"]
    entries = []
    for raw in data["entries"]:
        source = sources[raw["source"]]
        entries.append(Entry(
            source=raw["source"], table=raw["table"], label=raw["label"], model=raw["model"],
            dataset=raw["dataset"], top1_err=raw.get("top1_err"), top5_err=raw.get("top5_err"),
            params=Printed(raw["params"]) if raw.get("params") else None,
            flops=Printed(raw["flops"]) if raw.get("flops") else None,
            flops_convention=source["flops_convention"], date=str(source["date"]),
            tolerance=raw.get("tolerance"), flag=raw.get("flag"), note=raw.get("note")))
    return tuple(entries)


def find(model: str, dataset: str, source: str | None = None) -> list[Entry]:
    """Published entries of a configuration (by our canonical name), optionally from one source."""
    return [e for e in load() if e.model.lower() == model.lower() and e.dataset == dataset
            and (source is None or e.source == source)]


def _flops_count(entry: Entry, macs: int) -> int:
    return 2 * macs if entry.flops_convention == "2xMACs" else macs


def check_entry(entry: Entry, params: int, macs: int) -> dict:
    """Compare one entry with our counts; returns a report row with a verdict."""
    tolerance = entry.tolerance or {}
    flops = _flops_count(entry, macs)
    ok = {
        "params": entry.params is None or entry.params.matches(params, tolerance.get("params_M")),
        "flops": entry.flops is None or entry.flops.matches(flops, tolerance.get("flops_G")),
    }
    unflagged_ok = all(v for k, v in ok.items() if k not in entry.flagged_fields)
    verdict = "mismatch" if not unflagged_ok else "flagged" if entry.flag else "match"
    return {
        "source": entry.source, "dataset": entry.dataset, "label": entry.label, "model": entry.model,
        "params_published": entry.params.text if entry.params else "",
        "params_ours": params,
        "flops_published": entry.flops.text if entry.flops else "",
        "flops_ours": flops,
        "flops_convention": entry.flops_convention,
        "verdict": verdict,
        "explanation": entry.flag["explanation"] if entry.flag else "",
    }


def compare_complexity() -> pd.DataFrame:
    """Every published Params/FLOPs figure against our fvcore counts (one row per published entry)."""
    from .complexity import measure

    rows = []
    for entry in load():
        counts = measure(entry.model, entry.dataset)
        rows.append(check_entry(entry, counts.params, counts.macs))
    return pd.DataFrame(rows)
