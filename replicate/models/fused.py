"""Basis BatchNorm and coefficients as one operator on CPU (SPEC §1.1 steps 2 and 3).

A decomposed layer's basis BN is followed by the linear 1x1 coefficients, so ``coefficients(bn(y))`` is one
1x1 convolution whose weights are scaled per batch and which gains a bias. In channels_last memory ``y`` is an
``(N*H*W) x r`` matrix and everything, forward and backward, becomes a handful of matrix products over it.

Why it exists: PyTorch's CPU BatchNorm leaves its vectorised path for ranks that are not a multiple of the
SIMD width (the paper's 17, 34, 68, 33, ...); measured on 2 cores at batch 128 its forward plus backward at
rank 17 costs ~35 ms in channels_last, this operator ~7 ms. cuDNN has no such cliff, so CUDA keeps the
modules. Running statistics are updated exactly as ``nn.BatchNorm2d`` does.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

# Below this variance-to-squared-mean ratio the one-pass variance loses digits: recompute it in two passes.
_CANCELLATION_GUARD = 1e-3


def applies(y: torch.Tensor, bn: nn.BatchNorm2d | None, coefficients: nn.Conv2d | None) -> bool:
    """Whether ``coefficients(bn(y))`` can take the fused path (CPU, channels_last, standard BN, eager).

    Under ``torch.compile`` the modules stay: the compiler fuses BatchNorm itself, and the statistics'
    precision check would break its graph.
    """
    return (bn is not None and coefficients is not None and not torch.compiler.is_compiling()
            and y.device.type == "cpu" and y.dim() == 4 and y.is_contiguous(memory_format=torch.channels_last)
            and bn.affine and bn.track_running_stats and bn.momentum is not None and coefficients.bias is None)


def norm_coefficients(y: torch.Tensor, bn: nn.BatchNorm2d, coefficients: nn.Conv2d) -> torch.Tensor:
    """``coefficients(bn(y))`` for a channels_last ``y`` (see :func:`applies`); returns channels_last."""
    n, rank, h, w = y.shape
    rows = y.permute(0, 2, 3, 1).reshape(-1, rank)  # a view: channels_last is row-major (N*H*W) x rank
    weight = coefficients.weight.flatten(1)
    if bn.training:
        mean, var = _batch_stats(rows)
        _update_running_stats(bn, mean, var, len(rows))
        out = _TrainNormCoefficients.apply(rows, bn.weight, bn.bias, weight, mean, var, bn.eps)
    else:
        scale, shift = eval_affine(bn)
        out = torch.addmm(weight @ shift, rows, (weight * scale).T)
    return out.view(n, h, w, -1).permute(0, 3, 1, 2)


def eval_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm as ``y * scale + shift`` per channel (running statistics)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def _batch_stats(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and biased variance from two matrix products (Welford's loop is 5x slower here)."""
    count = len(rows)
    mean = _column_sums(rows) / count
    var = (rows.T @ rows).diagonal() / count - mean.square()
    if bool((var < _CANCELLATION_GUARD * mean.square()).any()):
        var, mean = torch.var_mean(rows, 0, correction=0)
    return mean, var.clamp_min(0)


def _column_sums(rows: torch.Tensor) -> torch.Tensor:
    """Column sums as a matrix-vector product: BLAS reads a tall thin matrix faster than ``sum(0)`` does."""
    return rows.new_ones(len(rows)) @ rows


@torch.no_grad()
def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
    bn.num_batches_tracked.add_(1)
    bn.running_mean.lerp_(mean, bn.momentum)
    bn.running_var.lerp_(var * (count / max(count - 1, 1)), bn.momentum)


class _TrainNormCoefficients(torch.autograd.Function):
    """rows -> W (gamma * (rows - mean) / std + beta) with batch statistics, and its exact gradient.

    The statistics are passed in (computed without autograd) and differentiated here analytically, which is
    what turns BatchNorm's elementwise passes into matrix products.
    """

    @staticmethod
    def forward(ctx, rows, gamma, beta, weight, mean, var, eps):
        invstd = torch.rsqrt(var + eps)
        scale = gamma * invstd
        ctx.save_for_backward(rows, gamma, beta, weight, mean, invstd)
        return torch.addmm(weight @ (beta - mean * scale), rows, (weight * scale).T)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        rows, gamma, beta, weight, mean, invstd = ctx.saved_tensors
        grad_out = grad_out.reshape(-1, weight.shape[0])
        count = len(rows)
        grad_sum = _column_sums(grad_out)  # (C,)
        # grad_out^T @ normalised rows, without materialising the normalised rows.
        projected = (grad_out.T @ rows - torch.outer(grad_sum, mean)) * invstd
        grad_weight = projected * gamma + torch.outer(grad_sum, beta)
        grad_gamma = (weight * projected).sum(0)
        grad_beta = weight.T @ grad_sum
        scale = gamma * invstd
        # BatchNorm's input gradient is affine per column in rows: g W diag(scale) + rows * a + b.
        slope = -scale * invstd * grad_gamma / count
        offset = -scale * grad_beta / count - mean * slope
        grad_rows = torch.addcmul(offset, rows, slope).addmm_(grad_out, weight * scale)
        return grad_rows, grad_gamma, grad_beta, grad_weight, None, None, None
