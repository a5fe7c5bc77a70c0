"""Folded inference: each decomposed convolution merged back into one convolution where that is cheaper.

In eval mode basis -> basis BN -> coefficients is a chain of linear maps, so it equals a single k x k
convolution with weight ``sum_t coeff[o, t] * bn_scale[t] * basis[t]`` and a bias. At the paper's ranks
(r = s + u slightly above C) the merged convolution costs C*C*k*k MACs per pixel against r*C*k*k + r*C
factorised, so folding removes both the extra arithmetic and two passes over the rank-r activations.
Where the rank is low enough that the factorised form is cheaper, the layer stays factorised. The shared
basis cannot survive folding (each layer gets its own merged weight): folding trades the parameter saving
for speed, which is what inference wants.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .blocks import BasisBank, DecomposedConv
from .fused import eval_affine


def fold(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` whose decomposed convolutions are merged where that saves MACs.

    The input model is left untouched. Outputs equal the unfolded model's in eval mode up to float
    rounding. Layers with a ReLU after the basis BN (ResNeXt) or without coefficients (naive sharing,
    MobileNetV2-Shared) are not linear chains and stay as they are.
    """
    folded = copy.deepcopy(model).eval()
    kept = 0
    for parent in list(folded.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DecomposedConv):
                replacement = fold_conv(child)
                setattr(parent, name, replacement)
                kept += isinstance(replacement, DecomposedConv)
    if kept == 0 and isinstance(getattr(folded, "shared_bases", None), BasisBank):
        folded.shared_bases = BasisBank()  # nothing calls the shared bases any more
    return folded


def folding_saves(conv: DecomposedConv) -> bool:
    """Whether one merged k x k convolution costs fewer MACs per pixel than basis + coefficients."""
    basis_in, kernel = _basis_geometry(conv)
    out_channels = conv.coefficients.out_channels
    return out_channels * basis_in * kernel * kernel < conv.rank * basis_in * kernel * kernel \
        + conv.rank * out_channels


@torch.no_grad()
def fold_conv(conv: DecomposedConv) -> nn.Module:
    """One decomposed conv as a single Conv2d, or the module itself where merging is not cheaper or not linear.

    A layer kept factorised still gets its basis BN applied through the coefficients on CPU (see ``fused``).
    """
    if conv.coefficients is None or conv.basis_relu or not _ungrouped(conv) or not folding_saves(conv):
        return conv
    scale, shift = _basis_norm_affine(conv)
    coefficients = conv.coefficients.weight.flatten(1)  # (C_out, rank)
    basis = _basis_weight(conv)
    merged = _conv_like(basis, conv.coefficients.out_channels)
    merged.weight.copy_(torch.einsum("or,rikl->oikl", coefficients * scale, basis))
    merged.bias.copy_(coefficients @ shift)
    return merged


def _ungrouped(conv: DecomposedConv) -> bool:
    return all(part is None or part.groups == 1 for part in (conv.unique, conv.shared))


def _basis_geometry(conv: DecomposedConv) -> tuple[int, int]:
    part = conv.unique if conv.unique is not None else conv.shared
    return part.in_channels, part.kernel_size[0]


def _basis_weight(conv: DecomposedConv) -> torch.Tensor:
    parts = [p.weight for p in (conv.unique, conv.shared) if p is not None]  # unique first (docs/paper.md: The method)
    return torch.cat(parts)


def _basis_norm_affine(conv: DecomposedConv) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode basis BN as y * scale + shift (identity when the layer has no basis BN)."""
    if conv.basis_bn is None:
        weight = conv.coefficients.weight
        return torch.ones(conv.rank).to(weight), torch.zeros(conv.rank).to(weight)
    return eval_affine(conv.basis_bn)


def _conv_like(basis: torch.Tensor, out_channels: int) -> nn.Conv2d:
    kernel = basis.shape[-1]
    return nn.Conv2d(basis.shape[1], out_channels, kernel, padding=kernel // 2, bias=True).to(basis)
