"""The model zoo of the paper: ``create(name, dataset)`` or ``build(ModelSpec(name, dataset, ...))``.

Names and identities are ``replicate.zoo`` (torch-free, re-exported here); each family module registers its
network builder on import (``registry.register_builder``); importing this package loads them all.
"""
from ..zoo import ModelConfig, ModelError, ModelSpec, SharingLayout, example_names, list_models, parse
from . import resnet, bottleneck, densenet, mobilenet  # noqa: F401,I001  (registers the builders)
from .blocks import BasisBank, BasisGroup, DecomposedConv
from .fold import fold
from .registry import build, create

__all__ = ["BasisBank", "BasisGroup", "DecomposedConv", "ModelConfig", "ModelError", "ModelSpec",
           "SharingLayout", "build", "create", "example_names", "fold", "list_models", "parse"]
