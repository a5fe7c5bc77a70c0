"""Declarative table specs (``replicate/specs/*.yaml``): loading, validation and the claim vocabulary.

A spec names a paper table's rows: each row a zoo model, a recipe and the training knobs it changes. A row may
start from another with ``base:`` and change only what differs. Everything is checked when the file is loaded
(keys, values, that the model can be built, that a referenced published row exists, claims and figures), so
a bad spec fails before anything runs, with the file, row and key named. Defaults come from ``config``.

Top-level keys: ``title`` (required), ``description``, ``published_source`` (README commit whose numbers the
rows are compared with), the verdict settings ``confidence``, ``margin``, ``tolerance``, ``claims``,
``figures`` and the row defaults below; ``rows`` (required).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, fields, replace
from pathlib import Path

import yaml

from . import published
from .config import (ORTHO_MODES, OVERRIDES, PRECISION, PRECISIONS, PROTOCOLS, RECIPES, ROW_DEFAULTS, Training,
                     Verdicts, override_value)
from .errors import UserError
from .zoo import ModelError, ModelSpec

SPECS_DIR = Path(__file__).resolve().parent / "specs"

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
    "ortho_mode": (str, f"one of {', '.join(ORTHO_MODES)}"),
    "lambda_r": ((int, float), "a number >= 0"),
    "precision": (str, f"one of {', '.join(PRECISIONS)}"),
    "sharing_depth": (int, "a number of blocks >= 1"),
    "unshared_bn": (bool, "true or false"),
    "grad_stats": (dict, "{every_batches: N, every_epochs: M}"),
    "published": ((dict, type(None)), "{source: COMMIT, label: PRINTED-LABEL} or null"),
    "note": (str, "free text"),
    "set": (dict, f"a mapping of overrides (a custom recipe, never compared with the paper), keys: "
                  f"{', '.join(OVERRIDES)}"),
}
DEFAULTABLE = ("dataset", "recipe", "protocol", "seeds", "orthogonality", "ortho_mode", "lambda_r", "precision",
               "grad_stats", "set")
VERDICT_KEYS = tuple(f.name for f in fields(Verdicts))
TABLE_KEYS = {"title", "description", "published_source", "claims", "figures", "rows", *VERDICT_KEYS, *DEFAULTABLE}

@dataclass(frozen=True)
class Relation:
    """What a claim may say of two rows: its words, and the test (``stats.RELATIONS``) that decides it."""

    words: str
    test: str  # of the rows' errors, or of their gradient statistics (steadier_gradients)


# The claim vocabulary (analysis decides each claim with its relation's test).
RELATIONS = {
    "lower": Relation("has a lower error than", "lower"),
    "not_worse": Relation("matches or beats", "not_worse"),
    "steadier_gradients": Relation("keeps its shared-basis gradients steadier than", "lower"),
}
CLAIM_KEYS = {"row", "than", "relation", "fewer_params", "margin", "primary", "text"}
# How a row's network variant reads in a figure or a table line (the zoo's variant -> words).
CONFIGURATIONS = {
    "original": "original",
    "nonshared": "decomposed, not shared",
    "naive": "naive (whole filters)",
    "sharedonly": "shared basis only",
    "single": "single shared",
    "double": "double shared",
}
# The figures a spec may feed (``replicate.figures`` draws each from every spec that names it).
FIGURES = ("error_vs_complexity", "compression", "gradient_flow", "sharing_depth", "ablation")


class SpecError(UserError, ValueError):
    """A spec that cannot be used; the message names the file, the row and the key."""


@dataclass(frozen=True)
class Row:
    id: str
    model: ModelSpec
    recipe: str
    label: str
    training: Training
    protocol: str
    seeds: int
    grad_stats: tuple[int, int]
    published: published.Entry | None
    note: str
    overrides: tuple[tuple[str, int | float], ...] = ()  # its ``set:``: a custom recipe (config.OVERRIDES)

    @property
    def dataset(self) -> str:
        return self.model.dataset

    @property
    def configuration(self) -> str:
        """'single shared + orthogonality, no unshared BN': what the row changes, read off its configuration."""
        config = self.model.config
        text = CONFIGURATIONS.get(config.variant, config.variant)
        return text + self.training_changes

    @property
    def training_changes(self) -> str:
        """' + orthogonality, no unshared BN': the knobs that tell apart rows of one network."""
        return (" + orthogonality" if self.training.orthogonality else "") + (
            "" if self.model.unshared_bn else ", no unshared BN")

    @property
    def trains_as_paper(self) -> bool:
        """The paper's own configuration, knobs and recipe: the rows a published number or a released file
        belongs to."""
        return trains_as_paper(self.model, self.training) and not self.overrides


def trains_as_paper(model: ModelSpec, training: Training) -> bool:
    """The zoo model as defined, trained with the paper's knobs (not an ablated variant)."""
    return model.is_default and training == Training.paper(model)


@dataclass(frozen=True)
class Claim:
    row: str
    than: str
    relation: str = "lower"
    fewer_params: bool = False
    margin: float | None = None  # not_worse: the table's margin unless given
    primary: bool = False  # pre-registered: one of the family the table's headline decisions are made on
    text: str = ""


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    path: Path
    rows: tuple[Row, ...]
    description: str
    published_source: str | None
    verdicts: Verdicts
    claims: tuple[Claim, ...]
    figures: tuple[str, ...]

    @property
    def short_title(self) -> str:
        """The title up to its dash: "Table 1", "Rank sweep"."""
        return self.title.split(" — ")[0]

    @property
    def shipped(self) -> bool:
        return self.path.parent == SPECS_DIR

    @property
    def source(self) -> published.Source | None:
        """Where the numbers the rows are compared with were printed (None without ``published_source``)."""
        return published.sources().get(self.published_source or "")

    @property
    def argument(self) -> str:
        """How a suggested command names this table: its name if shipped, else its file."""
        return self.name if self.shipped else str(self.path)


def available() -> dict[str, Path]:
    """The tables that ship with the suite, by name."""
    return {p.stem: p for p in sorted(SPECS_DIR.glob("*.yaml"))}


def resolve_path(table: str) -> Path:
    """A table name (``table2``, any case) or the path of a user's own spec file."""
    tables = available()
    if table.lower() in tables:
        return tables[table.lower()]
    path = Path(table)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SpecError(f"spec file {table} does not exist")
        if path.stem.lower() in tables and path.resolve() != tables[path.stem.lower()].resolve():
            raise SpecError(f"spec file {table} has the name of the shipped table {path.stem}, whose results and "
                            f"generated tables it would share: rename the file")
        return path
    close = difflib.get_close_matches(table.lower(), tables, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise SpecError(f"unknown table {table!r}: {hint}choose one of {', '.join(tables)} "
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
    for key in DEFAULTABLE:
        if key in data:
            _check_type(f"{path}: table default", key, data[key])
    defaults = {**ROW_DEFAULTS, **{k: data[k] for k in DEFAULTABLE if k in data}}
    source = data.get("published_source")
    raw_rows: dict[str, dict] = {}
    rows = []
    for index, raw in enumerate(data["rows"]):
        row = _row(path, index, raw, raw_rows, defaults, source)
        raw_rows[row.id] = raw if "base" not in raw else {**raw_rows[raw["base"]], **raw}
        rows.append(row)
    verdicts = _verdicts(path, data)
    claims = _claims(path, data.get("claims") or [], {r.id for r in rows})
    figures = _figures(path, data.get("figures") or [])
    return TableSpec(path.stem, str(data["title"]), path, tuple(rows), str(data.get("description", "")),
                     source, verdicts, claims, figures)


def _verdicts(path: Path, data: dict) -> Verdicts:
    values = {key: data[key] for key in VERDICT_KEYS if key in data}
    for key, value in values.items():
        if not _positive_number(value) or (key == "confidence" and value >= 1):
            raise SpecError(f"{path}: key {key!r} must be a number > 0" + (" and < 1" if key == "confidence" else ""))
    return Verdicts(**{k: float(v) for k, v in values.items()})


def _claims(path: Path, raw: list, row_ids: set[str]) -> tuple[Claim, ...]:
    claims = []
    for index, claim in enumerate(raw):
        where = f"{path}: claim {index + 1}"
        if not isinstance(claim, dict) or set(claim) - CLAIM_KEYS or not {"row", "than"} <= set(claim):
            raise SpecError(f"{where}: a claim is {{row: ID, than: ID, relation: {'|'.join(RELATIONS)}, "
                            f"fewer_params: bool, margin: POINTS, primary: bool, text: ...}}")
        for key in ("row", "than"):
            if claim[key] not in row_ids:
                raise SpecError(f"{where}: key {key!r} names {claim[key]!r}, which is not a row")
        if claim.get("relation", "lower") not in RELATIONS:
            raise SpecError(f"{where}: key 'relation' must be one of {', '.join(RELATIONS)}")
        margin = claim.get("margin")
        if margin is not None and not _positive_number(margin):
            raise SpecError(f"{where}: key 'margin' must be a number of points > 0")
        for key in ("fewer_params", "primary"):
            if not isinstance(claim.get(key, False), bool):
                raise SpecError(f"{where}: key {key!r} must be true or false")
        claims.append(Claim(**claim))
    return tuple(claims)


def _positive_number(value) -> bool:
    """A YAML number > 0 (a bool is no number, though Python counts it as an int)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


def _figures(path: Path, raw) -> tuple[str, ...]:
    if not isinstance(raw, list) or any(name not in FIGURES for name in raw):
        raise SpecError(f"{path}: key 'figures' must be a list of figure names from {', '.join(FIGURES)}")
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
        _check_type(where, key, value)
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


def _check_type(where: str, key: str, value) -> None:
    kind, meaning = ROW_KEYS[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SpecError(f"{where}: key {key!r} must be {meaning}, not {value!r}")


def _validated_row(where: str, merged: dict, source: str | None) -> Row:
    checks = {
        "recipe": merged["recipe"] in RECIPES,
        "protocol": merged["protocol"] in PROTOCOLS,
        "seeds": merged["seeds"] >= 1,
        "lambda_r": merged.get("lambda_r", 0) >= 0,
        "ortho_mode": merged.get("ortho_mode") in (None, *ORTHO_MODES),
        "precision": merged.get("precision", PRECISION) in PRECISIONS,
    }
    for key, ok in checks.items():
        if not ok:
            raise SpecError(f"{where}: key {key!r} must be {ROW_KEYS[key][1]}, not {merged[key]!r}")
    try:
        model = ModelSpec(merged["model"], merged["dataset"], merged.get("sharing_depth"),
                          merged.get("unshared_bn", True))
    except ModelError as error:
        raise SpecError(f"{where}: key 'model': {error}") from None
    training = Training(**{f.name: merged[f.name] for f in fields(Training) if f.name in merged})
    # a model without shared bases has nothing to regularise: the reference trains plain cross-entropy
    training = replace(training, lambda_r=float(training.lambda_r),
                       orthogonality=training.orthogonality and model.config.layout.shares)
    overrides = _overrides(where, merged.get("set"))
    entry = None if overrides and not merged.get("published") else _published(where, merged, model, training,
                                                                                source)
    return Row(id=merged["id"], model=model, recipe=merged["recipe"],
               label=merged.get("label", entry.label if entry else model.name), training=training,
               protocol=merged["protocol"], seeds=merged["seeds"],
               grad_stats=_grad_stats(where, merged.get("grad_stats")), published=entry,
               note=merged.get("note", ""), overrides=overrides)


def _overrides(where: str, value: dict | None) -> tuple[tuple[str, int | float], ...]:
    """A row's ``set:`` checked against the run config's schema, as ``--set`` is."""
    checked = {}
    for key, raw in (value or {}).items():
        try:
            checked[key] = override_value(str(key), raw)
        except ValueError as error:
            raise SpecError(f"{where}: key 'set': {error}") from None
    return tuple(sorted(checked.items()))


def _grad_stats(where: str, value: dict | None) -> tuple[int, int]:
    if not value:
        return (0, 0)  # off
    unknown = set(value) - {"every_batches", "every_epochs"}
    batches, epochs = value.get("every_batches", 10), value.get("every_epochs", 2)
    if unknown or not all(isinstance(v, int) and v >= 1 for v in (batches, epochs)):
        raise SpecError(f"{where}: key 'grad_stats' must be {ROW_KEYS['grad_stats'][1]} with counts >= 1")
    return (batches, epochs)


def _published(where: str, merged: dict, model: ModelSpec, training: Training,
               source: str | None) -> published.Entry | None:
    """The published row this row reproduces: named explicitly, or found by model when every knob is the paper's."""
    if "published" in merged and merged["published"] is None:
        return None
    reference = merged.get("published") or {}
    if not reference and not trains_as_paper(model, training):
        return None  # an ablated configuration is not what the paper printed
    wanted_source = reference.get("source", source)
    label = reference.get("label")
    candidates = [e for e in published.load() if e.dataset == model.dataset and e.source == wanted_source
                  and (e.label == label if label else e.model == model.name)]
    if label and not candidates:
        raise SpecError(f"{where}: key 'published': no published row {label!r} in source {wanted_source!r}")
    return candidates[0] if candidates else None
