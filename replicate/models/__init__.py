"""The model zoo of the paper: ``create(name, dataset)`` or ``ModelSpec(name, dataset, ...).build()``.

Each family module registers itself on import (``registry.register``); importing this package loads them all.
"""
from . import resnet, bottleneck, densenet, mobilenet  # noqa: F401,I001  (registers the families, in listing order)
from .blocks import BasisBank, BasisGroup, DecomposedConv, SharingPlan
from .fold import fold
from .registry import (DATASETS, ModelConfig, ModelError, ModelSpec, build, create, example_names, list_models,
                       parse)

__all__ = ["BasisBank", "BasisGroup", "DATASETS", "DecomposedConv", "ModelConfig", "ModelError", "ModelSpec",
           "SharingPlan", "build", "create", "example_names", "fold", "list_models", "parse"]
