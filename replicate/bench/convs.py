"""What the basis convolutions of a model cost on this machine, at their rank and without the unique channels.

Why: a decomposed layer's arithmetic grows with its rank, but convolution libraries compute output channels in
blocks (oneDNN on AVX-512: 16), so a rank of 17 can cost what 32 channels do. Timing each distinct basis
convolution of a model at its rank ``r``, at its shared rank ``s`` (the same layer without unique channels)
and optionally padded to a multiple of M shows how much of a shared model's training step that costs here.
Grouped bases (ResNeXt) are two convolutions by construction and are left out.
"""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import UserError
from ..models import DecomposedConv, ModelSpec, build
from ..models.blocks import trains_transposed, transposed_kernel
from ..results import device_name
from .measure import prepare_run, resolve_model, synchronize, time_task

PASSES = ("forward", "weight_grad", "input_grad")


@dataclass
class ConvMeasurement:
    """One basis convolution shape at one output width; times are medians in milliseconds."""

    model: str
    dataset: str
    device: str
    batch: int
    threads: int
    input: str  # channels x height x width of the convolution's input
    kernel: int
    layers: int  # decomposed layers of the model with this shape
    rank: int
    variant: str  # rank | shared (no unique channels) | padded (rank rounded up to a multiple)
    width: int  # output channels timed
    transposed: bool  # timed as the equal transposed convolution, as the engine trains it here
    forward_ms: float = 0.0
    weight_grad_ms: float = 0.0
    input_grad_ms: float = 0.0
    total_ms: float = 0.0  # forward + both gradients: what one layer costs per training step
    per_step_ms: float = 0.0  # total_ms x layers
    torch_version: str = ""
    code_commit: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BasisShape:
    in_channels: int
    size: int
    kernel: int
    rank: int
    shared_rank: int


def basis_shapes(name: str, dataset: str) -> Counter[BasisShape]:
    """Distinct single-convolution bases of a model (by input shape and rank), with how many layers use each."""
    model = build(ModelSpec(name, dataset)).eval()
    found: Counter[BasisShape] = Counter()

    def record(module: DecomposedConv, inputs: tuple[torch.Tensor, ...]) -> None:
        parts = [p for p in (module.unique, module.shared) if p is not None]
        if all(p.groups == 1 for p in parts):
            x = inputs[0]
            shared = module.shared.out_channels if module.shared is not None else 0
            found[BasisShape(x.shape[1], x.shape[-1], parts[0].kernel_size[0], module.rank, shared)] += 1

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, DecomposedConv)]
    size = model.config.input_size
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return found


def widths(shape: BasisShape, pad: Iterable[int]) -> dict[str, int]:
    """The output widths to time: the rank, the shared rank when it differs, the rank padded to each multiple."""
    chosen = {"rank": shape.rank}
    if 0 < shape.shared_rank < shape.rank:
        chosen["shared"] = shape.shared_rank
    for multiple in pad:
        padded = -(-shape.rank // multiple) * multiple
        if padded != shape.rank:
            chosen[f"padded{multiple}"] = padded
    return chosen


def _input(shape: BasisShape, batch: int, device: torch.device) -> torch.Tensor:
    """A batch of the convolution's input as the engine holds it (shared by all widths of the shape)."""
    return torch.randn(batch, shape.in_channels, shape.size, shape.size).to(
        device=device, memory_format=torch.channels_last)  # float32, as the engine trains by default


def _passes(x: torch.Tensor, shape: BasisShape, width: int, transposed: bool) -> dict[str, Callable[[], None]]:
    """Forward, weight gradient and input gradient of one basis convolution of ``width`` outputs on ``x``,
    as a transposed convolution when the engine trains it so (see :func:`replicate.models.blocks.basis_conv`)."""
    like = dict(device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    weight = torch.randn(width, shape.in_channels, shape.kernel, shape.kernel).to(**like)
    grad = torch.randn(len(x), width, shape.size, shape.size).to(**like)
    padding = [shape.kernel // 2] * 2
    if transposed:
        weight = transposed_kernel(weight).contiguous()
    convolve = F.conv_transpose2d if transposed else F.conv2d

    def backward(mask: list[bool]) -> Callable[[], None]:
        return lambda: torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], padding, [1, 1], transposed, [0, 0], 1, mask)

    tasks = {"forward": lambda: convolve(x, weight, None, 1, padding),
             "weight_grad": backward([False, True, False]), "input_grad": backward([True, False, False])}
    return {name: _synchronized(task, x.device) for name, task in tasks.items()}


def _synchronized(task: Callable[[], object], device: torch.device) -> Callable[[], None]:
    def run() -> None:
        task()
        synchronize(device)
    return run


def run_conv_benchmark(models: Iterable[str], device: str = "cpu", batch: int = 128, threads: int | None = None,
                       rounds: int = 3, min_time: float = 0.5, pad: Iterable[int] = (),
                       progress: bool = True) -> list[ConvMeasurement]:
    """Time every (basis shape, width) of the models; the widths of one shape are interleaved round by round."""
    target, threads, code_commit = prepare_run(device, threads)
    timed: list[tuple[ConvMeasurement, dict[str, Callable[[], None]]]] = []
    for token in models:
        config = resolve_model(token)
        for shape, layers in basis_shapes(config.name, config.dataset).items():
            x = _input(shape, batch, target)
            transposed = trains_transposed(x, shape.kernel)
            for variant, width in widths(shape, pad).items():
                row = ConvMeasurement(config.name, config.dataset, device_name(target), batch, threads,
                                      f"{shape.in_channels}x{shape.size}x{shape.size}", shape.kernel, layers,
                                      shape.rank, variant, width, transposed, torch_version=torch.__version__,
                                      code_commit=code_commit)
                timed.append((row, _passes(x, shape, width, transposed)))
    if not timed:
        raise UserError("none of the models has a single-convolution filter basis to time; "
                        "name shared models, e.g. ResNet56-S16U1*")
    samples: list[dict[str, list[float]]] = [{name: [] for name in PASSES} for _ in timed]
    with tqdm(total=rounds * len(timed), desc="basis convs", unit="conv", disable=not progress) as bar:
        for _ in range(rounds):
            for (_, tasks), sample in zip(timed, samples):
                for name, task in tasks.items():
                    sample[name] += time_task(task, threads, min_time / len(tasks))
                bar.update()
    for (row, _), sample in zip(timed, samples):
        row.forward_ms, row.weight_grad_ms, row.input_grad_ms = (statistics.median(sample[p]) for p in PASSES)
        row.total_ms = row.forward_ms + row.weight_grad_ms + row.input_grad_ms
        row.per_step_ms = row.total_ms * row.layers
    return [row for row, _ in timed]
