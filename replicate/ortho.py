"""The orthogonality regulariser of docs/paper.md: The orthogonality regulariser, vectorised per basis group.

For each group (the shared bases of one stage, or of one sharing run with a sharing depth) the filters are
rows of B; with P = (B Bᵀ − I)∘(B Bᵀ − I), a *term* sums chosen entries of P and carries their count, and
R = Σ terms / Σ counts is one pooled mean over all groups. Two definitions exist in the reference:

* ``cifar10`` (train_cifar10.py): B = [shared rows ; unique rows of the group's convs]; the shared rows of P
  are summed whole (shared–shared and shared–unique, each pair once) plus each unique basis's own diagonal
  block. Unique–unique pairs of different layers are not penalised.
* ``shared`` (train_cifar100.py, train_ilsvrc.py): B = the shared bases only, all of P.

The bases of one group (Double: one per conv position) are always penalised jointly. Naive whole-filter
sharing has no unique filters, so both definitions give the full Gram penalty of its shared convolutions.

Groups belong to a *pool* (``BasisGroup.pool``; one pool unless the model says otherwise): R is the sum over
pools of each pool's mean. The published version's Shared++ networks put their two kinds of shared
convolution (3x3 and 1x1 expansion; MobileNetV2: expansion and projection) in two pools, as its training
scripts do: two pooled means added, no cross term. A B with more rows than columns cannot reach zero: its
floor is rows − columns (orthonormal columns).
"""
from __future__ import annotations

import torch
from torch import nn

from .config import ORTHO_MODES, default_ortho_mode


def _rows(weights: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([w.flatten(1) for w in weights])


class Orthogonality(nn.Module):
    """R(model) for the model's basis groups; call it each step and add ``lambda_R * R`` to the loss."""

    def __init__(self, model: nn.Module, mode: str | None = None) -> None:
        super().__init__()
        mode = mode or default_ortho_mode(model.config.dataset)
        if mode not in ORTHO_MODES:
            raise ValueError(f"unknown orthogonality mode {mode!r}; choose one of {', '.join(ORTHO_MODES)}")
        self.mode = mode
        self.groups = list(model.shared_bases.groups)
        # Gathered once, one list per group: parameters keep their identity through training and loading.
        self.uniques = [g.unique_weights() if mode == "cifar10" else [] for g in self.groups]
        self.pools = sorted({g.pool for g in self.groups})
        self.counts = [sum(self._group_count(g, u) for g, u in zip(self.groups, self.uniques) if g.pool == pool)
                       for pool in self.pools]
        self.count = sum(self.counts)

    def __bool__(self) -> bool:
        return bool(self.groups)

    @staticmethod
    def _group_count(group, uniques: list[torch.Tensor]) -> int:
        shared = sum(b.weight.shape[0] for b in group.bases)
        unique_rows = sum(u.shape[0] for u in uniques)
        if len({u.shape for u in uniques}) > 1 or any(
                u[0].numel() != group.bases[0].weight[0].numel() for u in uniques):
            raise ValueError(f"basis group {group.name}: unique filters must share one shape and the shared "
                             f"filters' length to be regularised together (use mode='shared')")
        return shared * (shared + unique_rows) + sum(u.shape[0] ** 2 for u in uniques)

    def forward(self) -> torch.Tensor:
        if not self.groups:
            raise ValueError("this model has no shared bases to regularise")
        if len(self.pools) == 1:
            return sum(self._group_sum(g, u) for g, u in zip(self.groups, self.uniques)) / self.count
        return sum(self.pool_values())

    def pool_values(self) -> list[torch.Tensor]:
        """Each pool's mean, in pool order (R is their sum)."""
        return [sum(self._group_sum(g, u) for g, u in zip(self.groups, self.uniques) if g.pool == pool) / count
                for pool, count in zip(self.pools, self.counts)]

    @staticmethod
    def _group_sum(group, uniques: list[torch.Tensor]) -> torch.Tensor:
        shared = _rows([b.weight for b in group.bases])
        if not uniques:
            gram = shared @ shared.T
            return (gram - torch.eye(len(shared), device=gram.device, dtype=gram.dtype)).pow(2).sum()
        stacked = torch.stack([u.flatten(1) for u in uniques])  # (K, u, d): one rank per group
        rows = torch.cat([shared, stacked.flatten(0, 1)])
        top = shared @ rows.T  # the first m rows of B Bᵀ
        eye = torch.eye(*top.shape, device=top.device, dtype=top.dtype)
        own = stacked @ stacked.transpose(1, 2)  # each unique basis's own diagonal block
        own_eye = torch.eye(own.shape[1], device=own.device, dtype=own.dtype)
        return (top - eye).pow(2).sum() + (own - own_eye).pow(2).sum()
