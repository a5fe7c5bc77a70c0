"""The shared-basis models computed the straightforward way the authors' code computes them (docs/paper.md: The method; The orthogonality regulariser).

Kept here, as the benchmark's yardstick, not in the library: every decomposed layer runs its unique and its
shared convolution separately and concatenates the responses, then a BatchNorm2d module and a 1x1 Conv2d
module; the regulariser rebuilds each stage's matrix B every step by walking the blocks, computes the full
Gram matrix and sums the chosen entries. Same parameters, same function: only the computation differs, which
is what the tests check (outputs and gradients equal to the library's).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..models.blocks import DecomposedConv
from ..config import default_ortho_mode


class ReferenceDecomposedConv(nn.Module):
    """concat(unique(x), shared(x)) -> BatchNorm2d -> [ReLU] -> 1x1 coefficients, as separate modules."""

    def __init__(self, layer: DecomposedConv) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        parts = [part(x) for part in (layer.unique, layer.shared) if part is not None]
        y = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return layer.after_basis(y)


def reference_model(model: nn.Module) -> nn.Module:
    """A copy of a zoo model whose decomposed layers compute the reference way (parameters copied)."""
    reference = copy.deepcopy(model)
    for parent in list(reference.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DecomposedConv):
                setattr(parent, name, ReferenceDecomposedConv(child))
    return reference


class ReferenceOrthogonality:
    """R of docs/paper.md: The orthogonality regulariser the way the training scripts compute it: per step, per stage, a Python walk over blocks."""

    def __init__(self, model: nn.Module, mode: str | None = None) -> None:
        self.model = model
        self.mode = mode or default_ortho_mode(model.config.dataset)

    def __call__(self) -> torch.Tensor:
        total, count = 0.0, 0
        for group in self.model.shared_bases.groups:
            shared = torch.cat([basis.weight.view(basis.weight.shape[0], -1) for basis in group.bases])
            uniques = []
            if self.mode == "cifar10":
                for block in group.users:
                    if block.unique is not None:
                        uniques.append(block.unique.weight.view(block.unique.weight.shape[0], -1))
            rows = torch.cat([shared] + uniques)
            penalty = (rows @ rows.T - torch.eye(len(rows), device=rows.device)) ** 2
            total = total + penalty[:len(shared)].sum()
            count += len(shared) * len(rows)
            start = len(shared)
            for unique in uniques:
                end = start + len(unique)
                total = total + penalty[start:end, start:end].sum()
                count += len(unique) ** 2
                start = end
        return total / count
