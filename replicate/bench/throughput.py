"""Training images per second as the engine trains (issue 31): device-side input pipeline, channels_last,
float32 or bf16 autocast, ``torch.compile`` on or off; and the calibration figures the cost estimate uses.

``python -m replicate.bench --device cuda`` runs it for every network of Table 1 and ImageNet ResNet34 (one
command to run on a GPU node before launching a table). A CIFAR network is fed by ``datasets.DeviceLoader``
from a CIFAR-10-shaped split held on the device (crops, flips and normalisation per batch, as training does);
ImageNet ResNet34, whose data are files read by worker processes, trains on one fixed batch on the device
(the GPU alone: its loader must keep up on its own, measured by ``--loader`` for the CIFAR pipelines only).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import PRECISIONS, RECIPES, Training
from ..models import ModelSpec, build
from ..ortho import Orthogonality
from ..results import device_name
from ..train import autocast, prepare_images, prepare_model
from .loader import loader_splits
from .measure import prepare_run, resolve_model, synchronize

GPU_MODELS = ("ResNet32@cifar10", "ResNet32-S8U1@cifar10", "ResNet32-S16U1@cifar10", "ResNet32-S16U1*@cifar10",
              "ResNet56@cifar10", "ResNet56-S8U1@cifar10", "ResNet56-S16U1@cifar10", "ResNet56-S16U1*@cifar10",
              "ResNet34@imagenet")  # the networks of Table 1 and ImageNet ResNet34
LAMBDA_R = Training().lambda_r


@dataclass
class ThroughputMeasurement:
    """One (network, precision, compile) configuration: milliseconds per training step, images per second."""

    model: str
    dataset: str
    device: str
    precision: str
    compiled: bool
    batch: int
    loader: str  # device (the device pipeline feeds every step) | fixed batch (ImageNet)
    threads: int
    steps: int = 0
    step_ms: float = 0.0
    train_images_per_s: float = 0.0
    seconds_per_image: float = 0.0
    eval_seconds_per_image: float = 0.0
    torch_version: str = ""
    code_commit: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def recipe_batch(spec: ModelSpec) -> int:
    """The paper's batch per GPU for a network's dataset (CIFAR 128; ImageNet 512 over 4 GPUs: 128)."""
    recipe = RECIPES["cifar10" if spec.dataset != "imagenet" else "imagenet-resnet"]
    return recipe.per_gpu_batch


class _Feed:
    """Training batches as the engine gets them: from the device pipeline, epoch after epoch; or a fixed one."""

    def __init__(self, spec: ModelSpec, batch: int, device: torch.device, size: int, classes: int) -> None:
        self.device, self.batch, self.epoch = device, batch, 0
        if spec.dataset == "imagenet":
            self.loader = "fixed batch"
            self.fixed = (prepare_images(torch.randn(batch, 3, size, size), device),
                          torch.randint(0, classes, (batch,), device=device))
            self.splits = None
        else:
            self.loader, self.fixed = "device", None
            self.splits = loader_splits(batch * 16)
        self._iterator = iter(())

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fixed is not None:
            return self.fixed
        from ..datasets import device_loader

        for _ in range(2):
            try:
                images, labels = next(self._iterator)
                return images, labels % 10
            except StopIteration:
                self.epoch += 1
                self._iterator = iter(device_loader(self.splits.train, batch_size=self.batch, train=True, seed=0,
                                                    epoch=self.epoch, device=self.device, drop_last=True))
        raise RuntimeError("the device pipeline gave no batch")


def _measure(spec: ModelSpec, device: torch.device, precision: str, compiled: bool, batch: int,
             min_time: float, warmup: int) -> tuple[int, float, float, str]:
    """Steps timed, seconds per step, seconds per evaluated image, and the feed's name."""
    torch.manual_seed(0)
    model = prepare_model(build(spec), device)
    network = torch.compile(model) if compiled else model
    regulariser = Orthogonality(model) if model.shared_bases.groups else None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    feed = _Feed(spec, batch, device, model.config.input_size, model.config.num_classes)

    def step() -> None:
        images, labels = feed.next()
        with autocast(device, precision):
            logits = network(images)
        loss = F.cross_entropy(logits.float(), labels)
        if regulariser is not None:
            loss = loss + LAMBDA_R * regulariser()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    for _ in range(warmup):  # allocator, cuDNN autotuning, compilation
        step()
    synchronize(device)
    steps, started = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        if steps % 5 == 0 or device.type == "cpu":
            synchronize(device)
            if time.perf_counter() - started >= min_time:
                break
    seconds = (time.perf_counter() - started) / steps
    model.eval()
    with torch.no_grad():
        images, _ = feed.next()
        with autocast(device, precision):
            network(images)
        synchronize(device)
        evaluated, started = 0, time.perf_counter()
        while evaluated < 3 or time.perf_counter() - started < min_time / 4:
            with autocast(device, precision):
                network(images)
            synchronize(device)
            evaluated += 1
        eval_seconds = (time.perf_counter() - started) / evaluated / len(images)
    return steps, seconds, eval_seconds, feed.loader


def run_throughput(models=GPU_MODELS, device: str = "cuda", batch: int | None = None,
                   precisions=PRECISIONS, compile_modes=(False, True), threads: int | None = None,
                   min_time: float = 3.0, warmup: int = 3, progress: bool = True) -> list[ThroughputMeasurement]:
    """Every (network, precision, compile mode): training images/s with the engine's step and input pipeline."""
    target, threads, code_commit = prepare_run(device, threads)
    if target.type == "cuda":
        torch.backends.cudnn.benchmark = True
    configs = [(resolve_model(token), precision, compiled) for token in models for precision in precisions
               for compiled in compile_modes]
    rows = []
    for spec, precision, compiled in tqdm(configs, desc="throughput", unit="config", disable=not progress):
        size = batch or recipe_batch(spec)
        steps, seconds, eval_seconds, loader = _measure(spec, target, precision, compiled, size, min_time, warmup)
        rows.append(ThroughputMeasurement(
            spec.label, spec.dataset, device_name(target), precision, compiled, size, loader, threads, steps,
            round(seconds * 1e3, 3), round(size / seconds, 1), seconds / size, eval_seconds,
            torch.__version__, code_commit))
    return rows
