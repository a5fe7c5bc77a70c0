"""Basis BatchNorm, coefficients and the BatchNorm after them as one operator on CPU (docs/paper.md: The method steps 2-3).

In a ResNet block a decomposed layer computes ``bn(coefficients(basis_bn(y)))`` from the basis responses
``y``. Every step of that chain is affine per batch, so the whole chain is ``y @ A.T + c`` for a small
matrix ``A`` and vector ``c`` that depend on the parameters and on the batch moments of ``y`` (its mean and
r x r covariance; the statistics of the second BatchNorm follow from them). In channels_last memory ``y`` is
an ``(N*H*W) x r`` matrix, so forward and backward become a handful of matrix products over it, plus
the r x r algebra that maps parameters and moments to ``(A, c)`` and its hand-written derivative.

Why it exists: PyTorch's CPU BatchNorm leaves its vectorised path for ranks that are not a multiple of the
SIMD width (the paper's 17, 34, 68, 33, ...) and every BatchNorm is more passes over the activations.
Measured on 2 threads at batch 128, one stage-1 layer of ResNet56-S16U1* (basis conv, chain, ReLU; forward
and backward): 33.5 ms with the basis BN and coefficients fused and the block's BatchNorm2d after them,
28.0 ms with this operator, 18.6 ms for ResNet56's plain conv-BN-ReLU. cuDNN has no such cliff, so CUDA
keeps the modules. Running statistics of both BatchNorms are updated exactly as ``nn.BatchNorm2d`` does.

Precision: moments and products of ``y`` itself lose digits in float32 when a channel's mean is far above
its spread (the covariance ``E[yy^T] - mean mean^T`` as the squared ratio, the products as the ratio; at
100x the output was off by 1e-5 of its scale and parameter gradients by 2e-5, by 1e-2 where that flipped a
ReLU). The operator first subtracts the first image's mean response, which leaves a mean of the order of
the spread, and is then as accurate as the modules at any ratio. That pass over ``y`` costs 0.5-1.1 ms
(4-6 %) of the chain's 13-15 ms at stage 1 (forward and backward, 2 threads, old and new alternated 40
times, glibc kept from returning freed memory: with it returned, the chain alone page-faults its new tensor
in afresh each time, +3.6 ms, which whole training steps, faulting as often as before, do not show).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# Rows read as one when summing columns (see _column_sums).
_ROWS_FOLDED = 16


def applies(y: torch.Tensor, bn: nn.BatchNorm2d | None, coefficients: nn.Conv2d | None,
            output_bn: nn.Module | None = None) -> bool:
    """Whether the chain on ``y`` can take the fused path (CPU, channels_last, standard BNs, eager).

    Under ``torch.compile`` the modules stay: the compiler fuses BatchNorm itself. Under a trace (fvcore's
    MAC counting) they stay too, so that the count is the modules' convolutions, whatever the input's layout
    (a one-channel tensor, as a rank-1 basis gives, is channels_last as well as contiguous).
    """
    return (_standard(bn) and coefficients is not None and coefficients.bias is None
            and (output_bn is None or _standard(output_bn) and output_bn.training == bn.training)
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing() and y.device.type == "cpu"
            and y.dim() == 4 and y.is_contiguous(memory_format=torch.channels_last))


def _standard(bn: nn.Module | None) -> bool:
    return (isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.track_running_stats
            and bn.momentum is not None)


def norm_coefficients(y: torch.Tensor, bn: nn.BatchNorm2d, coefficients: nn.Conv2d,
                      output_bn: nn.BatchNorm2d | None = None, *, residual: torch.Tensor | None = None,
                      relu: bool = False) -> torch.Tensor:
    """``output_bn(coefficients(bn(y)))`` for a channels_last ``y``, then ``+ residual`` and ReLU if asked.

    Without ``output_bn`` (None) the chain stops at the coefficients. Taking a ResNet block's residual sum
    and ReLU in saves two passes over the output and two allocations (measured, 2 threads, batch 128, one
    shared block's forward and backward, alternated 40 times: ResNet34-S32U1 stage 1 448 -> 394 ms,
    stage 2 263 -> 255 ms; ResNet56-S16U1* stage 1 79 -> 75 ms).
    """
    weight = coefficients.weight.flatten(1)
    if not bn.training:
        matrix, offset = _eval_map(bn, weight, output_bn)
        return _affine_epilogue(y, matrix, offset, residual, relu)
    params = [bn.weight, bn.bias, weight] + ([] if output_bn is None else [output_bn.weight, output_bn.bias])
    return _TrainChain.apply(y, (bn, output_bn), relu, residual, *params)


def _affine_epilogue(y: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor,
                     residual: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """``relu(y @ A.T + c + residual)`` (parts as asked) for a channels_last ``y``, summed and clamped in
    place on the 1x1 convolution's fresh output (oneDNN's convolution with a fused sum and ReLU, measured
    per block, was no faster than this)."""
    out = F.conv2d(y, matrix[:, :, None, None], offset)
    if residual is not None:
        out.add_(residual)
    return out.relu_() if relu else out


def _rows(image: torch.Tensor) -> torch.Tensor:
    """A channels_last (N, C, H, W) tensor as its (N*H*W) x C matrix (a view)."""
    return image.permute(0, 2, 3, 1).reshape(-1, image.shape[1])


def _chain_map(norms, mean, cov, bn_weight, bn_bias, weight, out_weight=None, out_bias=None):
    """(A, c, intermediates) of the chain in training mode: ``chain(y) = y @ A.T + c`` for this batch.

    The basis BN scales basis response t by ``scale[t] = gamma[t] / std[t]``; the coefficients after it
    are ``projection = weight * scale``. The block's BN then sees outputs of variance
    ``diag(projection @ cov @ projection.T)`` and scales them by ``out_scale``.
    """
    inv_std = torch.rsqrt(cov.diagonal() + norms[0].eps)
    scale = bn_weight * inv_std
    projection = weight * scale  # (C_out, r)
    out_mean = weight @ bn_bias  # mean of the coefficients' outputs: the basis BN's outputs have mean bn_bias
    saved = {"inv_std": inv_std, "scale": scale, "projection": projection, "out_mean": out_mean}
    if out_weight is None:
        return projection, out_mean - projection @ mean, saved
    projected_cov = projection @ cov
    out_var = (projected_cov * projection).sum(1)
    out_inv_std = torch.rsqrt(out_var + norms[1].eps)
    out_scale = out_weight * out_inv_std
    matrix = projection * out_scale[:, None]
    saved.update(projected_cov=projected_cov, out_var=out_var, out_inv_std=out_inv_std, out_scale=out_scale)
    return matrix, out_bias - matrix @ mean, saved


def _chain_map_backward(saved, mean, weight, bn_bias, grad_matrix, grad_offset):
    """Gradients of the parameters, the mean and the covariance from those of (A, c); see _chain_map.

    Without the block's BN the covariance enters through its diagonal only, and its gradient is returned as
    that diagonal (a vector); with it, as the full r x r matrix.
    """
    scale, projection = saved["scale"], saved["projection"]
    centred = grad_matrix - torch.outer(grad_offset, mean)  # c = shift - A @ mean: A's total gradient
    if "out_scale" in saved:
        out_scale = saved["out_scale"]
        grad_out_scale = (centred * projection).sum(1)
        grad_out_var = -0.5 * grad_out_scale * out_scale * saved["out_inv_std"].square()
        grad_projection = centred * out_scale[:, None] + 2 * grad_out_var[:, None] * saved["projected_cov"]
        grad_cov = projection.T @ (grad_out_var[:, None] * projection)
        grad_mean = -(projection * out_scale[:, None]).T @ grad_offset
        out_grads = [grad_out_scale * saved["out_inv_std"], grad_offset]
        grad_bn_bias, grad_weight = torch.zeros_like(bn_bias), centred.new_zeros(())  # the shift cancels
    else:
        grad_projection = centred
        grad_cov = None
        grad_mean = -projection.T @ grad_offset
        out_grads = []
        grad_bn_bias, grad_weight = weight.T @ grad_offset, torch.outer(grad_offset, bn_bias)
    grad_weight = grad_weight + grad_projection * scale
    grad_scale = (grad_projection * weight).sum(0)
    grad_var = -0.5 * grad_scale * scale * saved["inv_std"].square()
    grad_cov = grad_var if grad_cov is None else grad_cov + torch.diag(grad_var)
    param_grads = [grad_scale * saved["inv_std"], grad_bn_bias, grad_weight, *out_grads]
    return param_grads, grad_mean, grad_cov


def _eval_map(bn: nn.BatchNorm2d, weight: torch.Tensor,
              output_bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, c) of the chain in eval mode, from the running statistics."""
    scale, shift = eval_affine(bn)
    matrix, offset = weight * scale, weight @ shift
    if output_bn is None:
        return matrix, offset
    out_scale, out_shift = eval_affine(output_bn)
    return matrix * out_scale[:, None], offset * out_scale + out_shift


def eval_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm as ``y * scale + shift`` per channel (running statistics)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _shifted(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``y`` minus a per-channel shift near its batch mean (channels_last), and that shift.

    The shift is the first image's mean response: cheap, and no further from the batch mean than images'
    responses differ.
    """
    rows = _rows(y)
    shift = rows[: len(rows) // len(y)].mean(0)
    return y - shift[:, None, None], shift


@torch.no_grad()
def _moments(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column means and biased covariance from two matrix products (Welford's loop is 5x slower here).

    ``E[yy^T] - mean mean^T`` loses as many digits as the squared ratio of mean to spread: the rows come
    shifted near their mean (see :func:`_shifted`), so the mean left here is of the order of the spread.
    """
    count = len(rows)
    mean = _column_sums(rows) / count
    return mean, _cross(rows, rows) / count - torch.outer(mean, mean)


def _cross(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``left.T @ right`` for tall matrices, the rows split among the threads.

    BLAS runs a product whose long axis is the reduction on one thread; a batched product over row blocks
    runs one block per thread (measured: 1.4 -> 0.7 ms for the Gram matrix of a rank-17 layer, 2 threads).
    """
    blocks = torch.get_num_threads()
    if blocks < 2 or len(left) % blocks:
        return left.T @ right
    left, right = left.view(blocks, -1, left.shape[1]), right.view(blocks, -1, right.shape[1])
    return torch.bmm(left.transpose(1, 2), right).sum(0)


def _column_sums(rows: torch.Tensor) -> torch.Tensor:
    """Column sums as a matrix-vector product: BLAS reads a tall thin matrix faster than ``sum(0)`` does.

    Sixteen rows are read as one row of a wider matrix first: BLAS's kernel for a width such as 17 is
    slow, one for 16 x 17 = 272 is not (measured, rank 17, 2 threads: 0.78 -> 0.24 ms; 16 wide: unchanged).
    """
    count, width = rows.shape
    fold = _ROWS_FOLDED if count % _ROWS_FOLDED == 0 else 1
    wide = rows.reshape(count // fold, fold * width)
    return (wide.new_ones(len(wide)) @ wide).view(fold, width).sum(0)


@torch.no_grad()
def _update_running_stats(norms, mean, cov, saved: dict, count: int) -> None:
    """What ``nn.BatchNorm2d`` does to both norms' buffers (unbiased variances, momentum averaging)."""
    unbiased = count / max(count - 1, 1)
    batches = [(mean, cov.diagonal()), (saved["out_mean"], saved.get("out_var"))]
    for norm, (batch_mean, batch_var) in zip(norms, batches):
        if norm is not None:
            norm.num_batches_tracked.add_(1)
            norm.running_mean.lerp_(batch_mean, norm.momentum)
            norm.running_var.lerp_(batch_var * unbiased, norm.momentum)


class _TrainChain(torch.autograd.Function):
    """y -> y @ A.T + c with (A, c) from :func:`_chain_map` of the batch moments, and its exact gradient.

    With a block's residual sum and ReLU taken in, backward first masks the incoming gradient with the saved
    output (what ReLU's own backward does) and returns that masked gradient for the residual as well.

    Forward first subtracts a shift near the batch mean from y (:func:`_shifted`); everything after it sees
    the shifted y, whose mean is of the order of its spread, and the shift, a constant that the basis BN
    removes, changes neither the output nor the gradients. Then the big tensors meet only matrix products:
    forward, the moments (column sums and Gram matrix) and one 1x1 convolution; backward, grad.T @ y, the
    column sums of grad and two products for y's gradient. The moments' part of that gradient follows the
    chain rule: d(mean)/dy = 1/n, and a gradient G of the covariance reaches y as (y - mean) (G + G.T) / n.
    """

    @staticmethod
    def forward(ctx, y, norms, relu, residual, *params):
        y, shift = _shifted(y)
        rows = _rows(y)
        mean, cov = _moments(rows)
        matrix, offset, saved = _chain_map(norms, mean, cov, *params)
        _update_running_stats(norms, shift + mean, cov, saved, len(rows))
        out = _affine_epilogue(y, matrix, offset, residual, relu)
        ctx.saved, ctx.relu, ctx.residual = saved, relu, residual is not None
        ctx.save_for_backward(y, mean, matrix, params[1], params[2], out if relu else None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        y, mean, matrix, bn_bias, weight, out = ctx.saved_tensors
        saved = ctx.saved
        del ctx.saved
        if ctx.relu:
            grad_out = torch.ops.aten.threshold_backward(grad_out, out, 0)
        grad_residual = grad_out if ctx.residual else None
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        rows, grad_rows = _rows(y), _rows(grad_out)
        param_grads, grad_mean, grad_cov = _chain_map_backward(
            saved, mean, weight, bn_bias, _cross(grad_rows, rows), _column_sums(grad_rows))
        count = len(rows)
        diagonal = grad_cov.dim() == 1  # basis BN alone: the covariance entered through its diagonal
        quadratic = 2 * grad_cov / count if diagonal else (grad_cov + grad_cov.T) / count
        constant = grad_mean / count - (quadratic * mean if diagonal else quadratic @ mean)
        grad_y = F.conv_transpose2d(grad_out, matrix[:, :, None, None], constant)
        grad_y = grad_y.contiguous(memory_format=torch.channels_last)
        if diagonal:
            _rows(grad_y).addcmul_(rows, quadratic)
        else:
            _rows(grad_y).addmm_(rows, quadratic)
        return (grad_y, None, None, grad_residual, *param_grads)
