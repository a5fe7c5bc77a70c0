"""The networks of the zoo: each family's module registers a builder; :func:`build` makes what a spec names.

A name's parsing, validation and identity are torch-free (``replicate.zoo``); this module only maps a
resolved :class:`ModelConfig` to its family's builder, under the key the family is declared with.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..catalog import ZOO_DATASETS
from ..zoo import ModelConfig, ModelError, ModelSpec

BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register_builder(key: str, builder: Callable[[ModelConfig], nn.Module]) -> None:
    """Register the network builder of the family declared under ``key`` (called from the family's module)."""
    BUILDERS[key] = builder


def build(model: ModelSpec | ModelConfig) -> nn.Module:
    """Instantiate the network a spec (or its resolved config) describes; it carries ``config`` and ``spec``."""
    config = model.config if isinstance(model, ModelSpec) else model
    network = BUILDERS[config.family.builder_key](config)
    network.config = config
    network.spec = config.spec
    return network


def create(name: str | ModelSpec, dataset: str | None = None, *, sharing_depth: int | None = None,
           unshared_bn: bool = True) -> nn.Module:
    """Build a model of the zoo by its paper name (or :class:`ModelSpec`); one-line :class:`ModelError` if not."""
    if isinstance(name, ModelSpec):
        return build(name)
    if dataset is None:
        raise ModelError(f"say which dataset {name!r} is for: one of {', '.join(ZOO_DATASETS)}")
    return build(ModelSpec(name, dataset, sharing_depth, unshared_bn))
