"""The model zoo of the paper: ``create(name, dataset)`` with names in the paper's notation."""
from .blocks import BasisBank, BasisGroup, DecomposedConv, SharingPlan
from .fold import fold
from .registry import DATASETS, ModelConfig, ModelError, build, create, example_names, list_models, parse

__all__ = ["BasisBank", "BasisGroup", "DATASETS", "DecomposedConv", "ModelConfig", "ModelError", "SharingPlan",
           "build", "create", "example_names", "fold", "list_models", "parse"]
