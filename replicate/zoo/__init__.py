"""The zoo's names without torch: ``ModelSpec(name, dataset, ...)`` parsed, validated and labelled.

Importing the package declares every family (``families.py``), so any spec can be parsed; the networks
themselves are ``replicate.models`` (``models.build(spec)``), which readers never import.
"""
from . import families  # noqa: F401  (declares the families, in listing order)
from .identity import (VARIANTS, Family, ModelConfig, ModelError, ModelSpec, SharingLayout, example_names,
                       list_models, parse)

__all__ = ["VARIANTS", "Family", "ModelConfig", "ModelError", "ModelSpec", "SharingLayout", "example_names",
           "list_models", "parse"]
