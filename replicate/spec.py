"""Declarative table specs (``tables/*.yaml``): loading and validation.

A spec names a paper table's rows: each row a zoo model, a dataset, a recipe and a few overrides. A row may
start from another with ``base:`` and change only what differs. Everything is checked when the file is
loaded (keys, values, that the model can be built, that a referenced published row exists), so a bad spec
fails before anything runs, with the file, row and key named.

Top-level keys: ``title`` (required), ``description``, ``published_source`` (README commit whose numbers the
rows are compared with), ``tolerance`` and the row defaults below; ``rows`` (required).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import published
from .config import PROTOCOLS, RECIPES
from .errors import UserError
from .models import ModelConfig, ModelError, parse
from .ortho import MODES

TABLES_DIR = Path(__file__).resolve().parent.parent / "tables"

# Row key -> (type check, description used in error messages). Table-level keys of the same name are defaults.
ROW_KEYS = {
    "id": (str, "a unique row name"),
    "base": (str, "the id of an earlier row to start from"),
    "model": (str, "a zoo model name, e.g. ResNet56-S16U1*"),
    "label": (str, "the label the paper prints"),
    "dataset": (str, "cifar10, cifar100 or imagenet"),
    "recipe": (str, f"one of {', '.join(RECIPES)}"),
    "protocol": (str, f"one of {', '.join(PROTOCOLS)}"),
    "seeds": (int, "a number of seeds >= 1"),
    "orthogonality": (bool, "true or false"),
    "ortho_mode": (str, f"one of {', '.join(MODES)}"),
    "lambda_r": ((int, float), "a number >= 0"),
    "sharing_depth": (int, "a number of blocks >= 1"),
    "unshared_bn": (bool, "true or false"),
    "grad_stats": (dict, "{every_batches: N, every_epochs: M}"),
    "published": ((dict, type(None)), "{source: COMMIT, label: PRINTED-LABEL} or null"),
    "note": (str, "free text"),
}
DEFAULTABLE = ("dataset", "recipe", "protocol", "seeds", "orthogonality", "ortho_mode", "lambda_r",
               "grad_stats")
TABLE_KEYS = {"title", "description", "published_source", "tolerance", "claims", "rows", *DEFAULTABLE}
CLAIM_KEYS = {"row", "than", "relation", "fewer_params", "text"}
DEFAULTS = {"protocol": "paper", "seeds": 1, "orthogonality": True, "lambda_r": 10.0}


class SpecError(UserError, ValueError):
    """A spec that cannot be used; the message names the file, the row and the key."""


@dataclass(frozen=True)
class Row:
    id: str
    model: str
    dataset: str
    recipe: str
    label: str
    protocol: str = "paper"
    seeds: int = 1
    orthogonality: bool = True
    ortho_mode: str | None = None
    lambda_r: float = 10.0
    sharing_depth: int | None = None
    unshared_bn: bool = True
    grad_stats: tuple[int, int] = (0, 0)
    published: published.Entry | None = None
    note: str = ""


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    path: Path
    rows: tuple[Row, ...]
    description: str = ""
    published_source: str | None = None
    tolerance: dict = field(default_factory=lambda: {"points": 0.5, "sigmas": 2.0})
    claims: tuple[dict, ...] = ()  # [{row, than, relation, fewer_params, text}]: see replicate.analysis


def available() -> dict[str, Path]:
    """The tables that ship with the suite, by name."""
    return {p.stem: p for p in sorted(TABLES_DIR.glob("*.yaml"))}


def resolve_path(table: str) -> Path:
    """A table name (``table2``) or a path to a user's own spec file."""
    tables = available()
    if table in tables:
        return tables[table]
    path = Path(table)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    raise SpecError(f"unknown table {table!r}: choose one of {', '.join(tables)} (see --list) "
                    f"or give the path of a .yaml spec file")


def load(table: str) -> TableSpec:
    """Load and validate a spec by name or path."""
    path = resolve_path(table)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}:{where} is not valid YAML ({getattr(error, 'problem', error)})") from None
    return _table(path, data)


def _table(path: Path, data) -> TableSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec is a mapping with 'title' and 'rows'")
    unknown = set(data) - TABLE_KEYS
    if unknown:
        raise SpecError(f"{path}: unknown top-level key {sorted(unknown)[0]!r}; "
                        f"allowed: {', '.join(sorted(TABLE_KEYS))}")
    for key in ("title", "rows"):
        if key not in data:
            raise SpecError(f"{path}: missing required key {key!r}")
    if not isinstance(data["rows"], list) or not data["rows"]:
        raise SpecError(f"{path}: 'rows' must be a non-empty list")
    defaults = {**DEFAULTS, **{k: data[k] for k in DEFAULTABLE if k in data}}
    source = data.get("published_source")
    raw_rows: dict[str, dict] = {}
    rows = []
    for index, raw in enumerate(data["rows"]):
        row = _row(path, index, raw, raw_rows, defaults, source)
        raw_rows[row.id] = raw if "base" not in raw else {**raw_rows[raw["base"]], **raw}
        rows.append(row)
    tolerance = {"points": 0.5, "sigmas": 2.0, **(data.get("tolerance") or {})}
    claims = _claims(path, data.get("claims") or [], {r.id for r in rows})
    return TableSpec(path.stem, str(data["title"]), path, tuple(rows), str(data.get("description", "")),
                     source, tolerance, claims)


def _claims(path: Path, raw: list, row_ids: set[str]) -> tuple[dict, ...]:
    from .analysis import RELATIONS

    for index, claim in enumerate(raw):
        where = f"{path}: claim {index + 1}"
        if not isinstance(claim, dict) or set(claim) - CLAIM_KEYS or not {"row", "than"} <= set(claim):
            raise SpecError(f"{where}: a claim is {{row: ID, than: ID, relation: "
                            f"{'|'.join(RELATIONS)}, fewer_params: bool, text: ...}}")
        for key in ("row", "than"):
            if claim[key] not in row_ids:
                raise SpecError(f"{where}: key {key!r} names {claim[key]!r}, which is not a row")
        if claim.get("relation", "lower") not in RELATIONS:
            raise SpecError(f"{where}: key 'relation' must be one of {', '.join(RELATIONS)}")
    return tuple(raw)


def _row(path: Path, index: int, raw, earlier: dict[str, dict], defaults: dict, source: str | None) -> Row:
    where = f"{path}: row {index + 1}"
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a row is a mapping (id: ..., model: ...)")
    if "id" in raw:
        where = f"{path}: row {raw['id']!r}"
    for key, value in raw.items():
        if key not in ROW_KEYS:
            raise SpecError(f"{where}: unknown key {key!r}; allowed: {', '.join(ROW_KEYS)}")
        kind, meaning = ROW_KEYS[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise SpecError(f"{where}: key {key!r} must be {meaning}, not {value!r}")
    if "id" not in raw:
        raise SpecError(f"{where}: missing key 'id'")
    if raw["id"] in earlier:
        raise SpecError(f"{where}: duplicate row id")
    if "base" in raw and raw["base"] not in earlier:
        raise SpecError(f"{where}: key 'base' names {raw['base']!r}, which is not an earlier row")
    merged = {**defaults, **(earlier[raw["base"]] if "base" in raw else {}), **raw}
    merged.pop("base", None)
    for key in ("model", "dataset", "recipe"):
        if key not in merged:
            raise SpecError(f"{where}: missing key {key!r} ({ROW_KEYS[key][1]})")
    return _validated_row(where, merged, source)


def _validated_row(where: str, merged: dict, source: str | None) -> Row:
    checks = {
        "recipe": (merged["recipe"] in RECIPES, ROW_KEYS["recipe"][1]),
        "protocol": (merged["protocol"] in PROTOCOLS, ROW_KEYS["protocol"][1]),
        "seeds": (merged["seeds"] >= 1, ROW_KEYS["seeds"][1]),
        "lambda_r": (merged["lambda_r"] >= 0, ROW_KEYS["lambda_r"][1]),
        "ortho_mode": (merged.get("ortho_mode") in (None, *MODES), ROW_KEYS["ortho_mode"][1]),
    }
    for key, (ok, meaning) in checks.items():
        if not ok:
            raise SpecError(f"{where}: key {key!r} must be {meaning}, not {merged[key]!r}")
    try:
        config = parse(merged["model"], merged["dataset"], sharing_depth=merged.get("sharing_depth"),
                       unshared_bn=merged.get("unshared_bn", True))
    except ModelError as error:
        raise SpecError(f"{where}: key 'model': {error}") from None
    grad_stats = _grad_stats(where, merged.get("grad_stats"))
    if merged["orthogonality"] and not config.plan.shares:
        merged["orthogonality"] = False  # nothing to regularise: the reference trains plain CE
    entry = _published(where, merged, config, source)
    return Row(id=merged["id"], model=config.name, dataset=config.dataset, recipe=merged["recipe"],
               label=merged.get("label", entry.label if entry else config.name), protocol=merged["protocol"],
               seeds=merged["seeds"], orthogonality=merged["orthogonality"],
               ortho_mode=merged.get("ortho_mode"), lambda_r=float(merged["lambda_r"]),
               sharing_depth=merged.get("sharing_depth"), unshared_bn=merged.get("unshared_bn", True),
               grad_stats=grad_stats, published=entry, note=merged.get("note", ""))


def _grad_stats(where: str, value: dict | None) -> tuple[int, int]:
    if not value:
        return (0, 0)
    unknown = set(value) - {"every_batches", "every_epochs"}
    batches, epochs = value.get("every_batches", 10), value.get("every_epochs", 2)
    if unknown or not all(isinstance(v, int) and v >= 1 for v in (batches, epochs)):
        raise SpecError(f"{where}: key 'grad_stats' must be {ROW_KEYS['grad_stats'][1]} with counts >= 1")
    return (batches, epochs)


def _published(where: str, merged: dict, config: ModelConfig, source: str | None) -> published.Entry | None:
    """The published row this row reproduces: named explicitly, or found by model for the paper's setup."""
    if "published" in merged and merged["published"] is None:
        return None
    reference = merged.get("published") or {}
    paper_setup = (merged["orthogonality"] or not config.plan.shares) and merged["lambda_r"] == 10 \
        and merged.get("sharing_depth") is None and merged.get("unshared_bn", True)
    if not reference and not paper_setup:
        return None  # an ablated configuration is not what the paper printed
    wanted_source = reference.get("source", source)
    label = reference.get("label")
    candidates = [e for e in published.load() if e.dataset == config.dataset and e.source == wanted_source
                  and (e.label == label if label else e.model == config.name)]
    if label and not candidates:
        raise SpecError(f"{where}: key 'published': no published row {label!r} in source {wanted_source!r}")
    return candidates[0] if candidates else None
