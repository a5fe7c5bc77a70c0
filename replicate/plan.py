"""From a table spec to the runs it needs: rows x seeds under a profile, their state and their cost.

A planned run knows its resolved :class:`RunConfig`, its folder in the results store (named by the config's
run id) and the folder's state (done, corrupt, partial, not started). The cost estimate is measured where it can
be: a figure of ``replicate.calibration`` (seconds per training image of the run's network and precision,
measured on the device kind it will train on) gives GPU-hours = epochs x (train images x t + evaluated images
x t_eval) / 3600. Otherwise it is a stated model: GPU-hours = epochs x images x max(6 x MACs / R, t_min) / 3600
with R a sustained GPU throughput for the run's precision (``ASSUMED_TFLOPS``) and t_min a per-image floor for
data loading and small-kernel overhead. Each run says which (``Cost.basis``).
"""
from __future__ import annotations

import argparse
import fnmatch
from dataclasses import dataclass, replace
from pathlib import Path

from . import calibration
from .catalog import DATASETS
from .complexity import lookup
from .config import PROFILES, RECIPES, Profile, RunConfig, apply_overrides, parse_override
from .results import RunFolder
from .spec import Row, SpecError, TableSpec

# Assumed effective training throughput of one current data-centre GPU on convnets, by precision: bf16 autocast
# 20 TFLOP/s; fp32 (convolutions in TF32, PyTorch's default on GPUs that have it, at half bf16's tensor-core
# rate) 10. Small CIFAR networks reach less: measure them (python -m replicate.bench --calibrate).
ASSUMED_TFLOPS = {"fp32": 10.0, "bf16": 20.0}
SUSTAINED_TFLOPS = ASSUMED_TFLOPS["bf16"]
MIN_SECONDS_PER_IMAGE = 20e-6  # ~50k images/s: the data pipeline ceiling for small CIFAR models


@dataclass(frozen=True)
class PlannedRun:
    table: str
    row: Row
    config: RunConfig
    folder: RunFolder

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def state(self) -> str:
        """One of ``results.FOLDER_STATES``, read from the results store on every access (it parses
        result.json: a caller needing it more than once keeps it, as ``run.read_states`` does)."""
        return self.folder.state

    def gpu_hours(self, tflops: float | None = None) -> float:
        """The stated model's GPU-hours at ``tflops`` (default: the assumption for the run's precision)."""
        config = self.config
        tflops = tflops or ASSUMED_TFLOPS[config.training.precision]
        macs = lookup(config.model).macs
        train, evaluate = image_counts(config)
        seconds_per_image = max(6 * macs / (tflops * 1e12), MIN_SECONDS_PER_IMAGE)
        eval_seconds = max(2 * macs / (tflops * 1e12), MIN_SECONDS_PER_IMAGE / 3)
        return config.recipe.epochs * (train * seconds_per_image + evaluate * eval_seconds) / 3600


    def cost(self, figures: list[calibration.Figure] = (), device_kind: str | None = None,
             tflops: float | None = None) -> "Cost":
        """GPU-hours measured (a calibration figure of this network and precision on ``device_kind``) or assumed
        (the stated model at ``tflops``, else the assumption for the run's precision)."""
        config = self.config
        figure = calibration.find(list(figures), config.model.label, config.model.dataset,
                                  config.training.precision, device_kind)
        if figure is None:
            rate = tflops or ASSUMED_TFLOPS[config.training.precision]
            return Cost(self.gpu_hours(rate), f"assumed {rate:g} TFLOP/s")
        train, _ = image_counts(config)
        eval_seconds = figure.eval_seconds_per_image or figure.seconds_per_image / 3
        seconds = config.recipe.epochs * train * figure.seconds_per_image + evaluated_images(config) * eval_seconds
        return Cost(seconds / 3600, f"measured on {figure.device}")


@dataclass(frozen=True)
class Cost:
    hours: float
    basis: str  # "measured on <device>" | "assumed <T> TFLOP/s"


def image_counts(config: RunConfig) -> tuple[int, int]:
    """Training and evaluation images one epoch of a run touches."""
    if config.synthetic:
        return config.synthetic_sizes
    train = DATASETS[config.data].train_images - config.held_out
    if config.train_subset:
        train = min(train, config.train_subset)
    return train, DATASETS[config.data].test_images + config.held_out


def evaluated_images(config: RunConfig) -> int:
    """Images a whole run evaluates: the selection split every epoch (paper: the test set), and under the clean
    protocol the test set once at the end (twice when the selected epoch is not the last: not known before)."""
    if config.synthetic:
        return config.recipe.epochs * config.synthetic_sizes[1]
    test = DATASETS[config.data].test_images
    if config.held_out:  # the validation split each epoch, the test set once at the end
        return config.recipe.epochs * config.held_out + test
    return config.recipe.epochs * test


def run_config(row: Row, profile: Profile, seed: int, protocol: str | None = None,
               precision: str | None = None, overrides: dict | None = None) -> RunConfig:
    """Resolve one row and seed under a profile (and the command line's protocol, precision and overrides,
    if given: ``overrides`` (``--set``) go over the row's own ``set:``; either makes a custom recipe)."""
    recipe = RECIPES[row.recipe]
    knobs = {**dict(row.overrides), **(overrides or {})}
    grad_stats = row.grad_stats if row.grad_stats[0] or profile.grad_stats is None else profile.grad_stats
    epochs = knobs.get("epochs", profile.epochs)
    if epochs is not None:  # the paper's schedule scaled once, to the profile's epochs or the overridden ones
        recipe = recipe.scaled(epochs, profile.batch_size or recipe.batch_size,
                               profile.validation if profile.validation is not None else recipe.validation)
    training = replace(row.training, precision=precision) if precision else row.training
    recipe, training = apply_overrides(recipe, training, knobs)
    protocol = protocol or profile.protocol or row.protocol
    if protocol == "clean" and not recipe.validation:
        raise SpecError(f"row {row.id}: the clean protocol selects the epoch on a validation split, and "
                        f"validation=0 leaves none; set validation to 1 or more, or use --protocol paper")
    return RunConfig(
        model=profile.model(row.model), data=profile.data or row.dataset, synthetic=profile.synthetic,
        recipe=recipe, profile=profile.name, protocol=protocol, seed=seed,
        training=training, train_subset=profile.train_subset, synthetic_sizes=profile.synthetic_sizes,
        grad_stats=grad_stats, overrides=tuple(sorted(knobs.items())))


def override_option(text: str) -> tuple[str, int | float]:
    """An argparse type for ``--set KEY=VALUE``: checked against the run config's schema (``config.OVERRIDES``),
    else the usage error naming the key and the valid keys."""
    try:
        return parse_override(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def select_rows(spec: TableSpec, patterns: str | None) -> list[Row]:
    """The rows matching comma-separated ids or glob patterns; every pattern must match at least one row."""
    if patterns is None:
        return list(spec.rows)
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    if not wanted:
        raise SpecError(f"--rows {patterns!r} names no row; give row ids or glob patterns, e.g. 'resnet56*'")
    for pattern in wanted:
        if not any(fnmatch.fnmatch(r.id, pattern) for r in spec.rows):
            raise SpecError(f"--rows pattern {pattern!r} matches no row of {spec.name}; rows are: "
                            f"{', '.join(r.id for r in spec.rows)}")
    return [r for r in spec.rows if any(fnmatch.fnmatch(r.id, p) for p in wanted)]


def expand(spec: TableSpec, results: Path, profile: str = "full", seeds: int | None = None,
           rows: str | None = None, protocol: str | None = None, precision: str | None = None,
           overrides: dict | None = None) -> list[PlannedRun]:
    """Every run of ``spec``: matching rows x seeds, each with its results folder (``overrides``: ``--set``)."""
    if seeds is not None and seeds < 1:
        raise SpecError("--seeds must be at least 1")
    chosen = select_rows(spec, rows)
    chosen_profile = PROFILES[profile]
    applicable = [r for r in chosen if chosen_profile.applies(r.dataset)]
    if not applicable:
        raise SpecError(f"the {profile} profile covers CIFAR-10-style rows only and {spec.name} has none "
                        f"selected; use --profile smoke or full")
    planned = []
    for row in applicable:
        for seed in range(seeds or row.seeds):
            config = run_config(row, chosen_profile, seed, protocol, precision, overrides)
            planned.append(PlannedRun(spec.name, row, config, RunFolder(Path(results) / spec.name / config.run_id)))
    return planned


def skipped_rows(spec: TableSpec, profile: str) -> list[Row]:
    """Rows a profile leaves out (the mini profile trains CIFAR-10-style rows only)."""
    return [r for r in spec.rows if not PROFILES[profile].applies(r.dataset)]
