"""The one building block of every shared model, and the bank that owns the shared bases.

A 3x3 convolution is realised as a *filter basis* (a rank-r convolution made of a layer-specific
``unique`` part and a ``shared`` part, concatenated unique-first), optionally followed by a BatchNorm over
the r basis responses, an optional ReLU and layer-specific 1x1 *coefficients* (docs/paper.md: The method). Every variant of
the paper is one setting of these switches:

======================  ===========  ==========  ==========  ============
variant                 unique rank  shared      basis BN    coefficients
======================  ===========  ==========  ==========  ============
NonShared               u            none        yes         yes
SharedOnly              0            basis       yes         yes
Single/DoubleShared     u            basis       yes         yes
ResNeXt shared block    u            basis       yes + ReLU  no (merged)
naive filter sharing    0            full conv   no          no
MobileNetV2-Shared      0            1x1 conv    no          no
Shared++ (two per blk)  0            full convs  no          no
======================  ===========  ==========  ==========  ============

A shared basis is an ``nn.Conv2d`` registered once, in the model's :class:`BasisBank`; the blocks that use it
hold an unregistered reference, so it appears once in ``parameters()`` and ``state_dict()`` while gradients
from every use accumulate in the same tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import fused


class DecomposedConv(nn.Module):
    """A convolution computed through a [unique ‖ shared] filter basis (docs/paper.md: The method)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        unique_rank: int = 0,
        shared: nn.Conv2d | None = None,
        kernel_size: int = 3,
        unique_groups: int = 1,
        basis_norm: bool = True,
        basis_relu: bool = False,
        coefficients: bool = True,
    ) -> None:
        super().__init__()
        if unique_rank < 0 or (unique_rank == 0 and shared is None):
            raise ValueError("a decomposed convolution needs a unique part, a shared basis, or both")
        self.unique = (
            nn.Conv2d(in_channels, unique_rank, kernel_size, padding=kernel_size // 2,
                      groups=unique_groups, bias=False)
            if unique_rank else None
        )
        # A tuple is not registered by nn.Module: the basis stays owned by the BasisBank alone.
        self._shared: tuple[nn.Conv2d, ...] = (shared,) if shared is not None else ()
        self.rank = unique_rank + (shared.out_channels if shared is not None else 0)
        self.basis_bn = nn.BatchNorm2d(self.rank) if basis_norm else None
        self.basis_relu = basis_relu
        self.coefficients = nn.Conv2d(self.rank, out_channels, 1, bias=False) if coefficients else None
        self.out_channels = out_channels if coefficients else self.rank

    @property
    def shared(self) -> nn.Conv2d | None:
        return self._shared[0] if self._shared else None

    def _fusable(self) -> bool:
        # Concatenating weights along the output axis is only the same operator without groups.
        return self.unique.groups == 1 and self.shared.groups == 1

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """Responses of the [unique ‖ shared] basis: one convolution when the parts can be fused."""
        parts = [part for part in (self.unique, self.shared) if part is not None]
        if len(parts) == 1:
            return _part_responses(parts[0], x)
        if self._fusable():
            return basis_conv(x, torch.cat([self.unique.weight, self.shared.weight], dim=0))
        return torch.cat([_part_responses(part, x) for part in parts], dim=1)

    def forward(self, x: torch.Tensor, output_norm: nn.Module | None = None, *,
                residual: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
        """The decomposed convolution, then ``output_norm`` (a block's BatchNorm), ``+ residual``, ReLU.

        Taking the rest of the block's layer in lets the CPU path compute basis BN, coefficients, that
        BatchNorm, the sum and the ReLU as one operator (see ``fused``); everywhere else the modules run one
        after the other.
        """
        y = self.basis(x)
        if not self.basis_relu and fused.applies(y, self.basis_bn, self.coefficients, output_norm):
            return fused.norm_coefficients(y, self.basis_bn, self.coefficients, output_norm,
                                           residual=residual, relu=relu)
        out = self.after_basis(y)
        return add_relu(out if output_norm is None else output_norm(out), residual, relu)

    def after_basis(self, y: torch.Tensor) -> torch.Tensor:
        """Basis BN, optional ReLU and coefficients applied module by module (the plain computation)."""
        if self.basis_bn is not None:
            y = self.basis_bn(y)
        if self.basis_relu:
            y = F.relu(y)
        if self.coefficients is not None:
            y = self.coefficients(y)
        return y


def _part_responses(part: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """One basis part on its own: a grouped part as its module, an ungrouped one through :func:`basis_conv`."""
    return part(x) if part.groups > 1 else basis_conv(x, part.weight)


def basis_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A stride-1 convolution with same padding, run in training on CPU as the equal transposed convolution.

    For channels_last input, oneDNN computes the weight gradient of a convolution whose output channels are
    not a multiple of 16 (the paper's ranks 17, 34, 33, ...) at the cost of a wider one; for the transposed
    convolution with the flipped kernel, the same numbers, it does not. Measured on 2 threads, batch 128,
    alternated 30 times: weight gradient 16->17 at 32x32 6.0 -> 3.0 ms, 32->34 at 16x16 3.5 -> 2.4 ms,
    64->33 at 32x32 38.5 -> 24.7 ms; forward and input gradient unchanged, and so are all three at multiples
    of 16 and in NCHW memory (where it does not apply).
    """
    padding = weight.shape[-1] // 2
    if weight.requires_grad and torch.is_grad_enabled() and trains_transposed(x, weight.shape[-1]):
        return F.conv_transpose2d(x, transposed_kernel(weight), None, 1, padding)
    return F.conv2d(x, weight, None, 1, padding)


def trains_transposed(x: torch.Tensor, kernel_size: int) -> bool:
    """Whether :func:`basis_conv` trains on ``x`` through the transposed convolution (CPU, channels_last)."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            and kernel_size % 2 == 1 and not torch.compiler.is_compiling())


def transposed_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The weight of the transposed convolution equal to ``conv2d(x, weight)`` at stride 1, same padding."""
    return weight.flip(2, 3).transpose(0, 1)


def add_relu(out: torch.Tensor, residual: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """``relu(out + residual)``, each part only when asked: the end of a ResNet block's layer."""
    if residual is not None:
        out = out + residual
    return F.relu(out) if relu else out


@dataclass(eq=False)
class BasisGroup:
    """Shared bases that are regularised together, and the decomposed convs that use them."""

    name: str
    bases: list[nn.Conv2d]
    users: list[DecomposedConv] = field(default_factory=list)
    pool: int = 0  # groups of one pool are averaged together by the regulariser; pools are summed

    def conv(self, position: int, in_channels: int, out_channels: int, **options) -> DecomposedConv:
        """A decomposed conv using this group's basis for conv ``position`` (Double: one basis each)."""
        conv = DecomposedConv(in_channels, out_channels, shared=self.bases[position % len(self.bases)],
                              **options)
        self.users.append(conv)
        return conv

    def unique_weights(self) -> list[torch.Tensor]:
        return [u.unique.weight for u in self.users if u.unique is not None]


class BasisBank(nn.ModuleDict):
    """Owns every shared basis of a model (each registered exactly once) and their groups."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[BasisGroup] = []

    def new_group(self, name: str, shapes: list[tuple[int, int, int, int]], groups: int = 1,
                  pool: int = 0) -> BasisGroup:
        """Create the bases of one group; ``shapes`` are (out, in, k, k) in full (ungrouped) channels.

        ``pool``: the regulariser's pooled mean this group belongs to (one for every group, unless a model
        regularises two kinds of shared convolution separately, as the Shared++ networks do)."""
        bases = []
        for index, (out_channels, in_channels, k, _) in enumerate(shapes):
            conv = nn.Conv2d(in_channels, out_channels, k, padding=k // 2, groups=groups, bias=False)
            key = name if len(shapes) == 1 else f"{name}_{index + 1}"
            self[key] = conv
            bases.append(conv)
        group = BasisGroup(name, bases, pool=pool)
        self.groups.append(group)
        return group

    def orthogonal_init_(self) -> None:
        """Give each group jointly orthonormal rows (docs/paper.md: The method: Double bases mutually orthogonal).

        A group's bases viewed as one matrix with more rows than columns get orthonormal columns instead
        (``nn.init.orthogonal_``: the rows cannot all be orthonormal)."""
        with torch.no_grad():
            for group in self.groups:
                rows = [b.weight.shape[0] for b in group.bases]
                joint = torch.empty(sum(rows), group.bases[0].weight[0].numel())
                nn.init.orthogonal_(joint)
                for basis, part in zip(group.bases, joint.split(rows)):
                    basis.weight.copy_(part.view_as(basis.weight))


def sharing_chunks(count: int, depth: int | None) -> list[range]:
    """Split ``count`` consecutive decomposed blocks into runs of ``depth`` that share one basis."""
    step = count if depth is None else depth
    return [range(start, min(start + step, count)) for start in range(0, count, max(step, 1))]
