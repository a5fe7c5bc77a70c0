"""Images per second per core of the two input pipelines (issue 31), on CIFAR-10-shaped data in memory.

* ``workers``: the per-sample pipeline (PIL RandomCrop, flip, ToTensor, Normalize under an RNG seeded per
  sample), timed in the measuring process itself: what each loader worker process does per image, without the
  batches' trip between processes (so an upper bound per worker core);
* ``device``: the whole-batch pipeline (``datasets.DeviceLoader``) on ``--device``, a whole epoch per round
  (its per-epoch draws included); the first epoch, which also copies and mirrors the split, is not timed.

With one thread (the default) images/s is the figure per core; pin the process (``taskset -c 0``) on a
machine where something else runs.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ..datasets import Splits, device_loader, epoch_loader, in_memory_splits
from ..results import device_name
from .measure import prepare_run, synchronize

LOADER_PIPELINES = ("device", "workers")


@dataclass
class LoaderMeasurement:
    """One input pipeline: training images per second (median over rounds) and per core."""

    loader: str
    dataset: str
    device: str
    batch: int
    threads: int
    cores: int  # CPUs the process may run on (os.sched_getaffinity): 1 when pinned
    images: int  # images per timed round
    images_per_s: float = 0.0
    images_per_s_per_core: float = 0.0
    rounds_images_per_s: list[float] = field(default_factory=list)
    torch_version: str = ""
    code_commit: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def loader_splits(images: int, seed: int = 0) -> Splits:
    """A CIFAR-10-shaped training split of ``images`` random pixels, in torchvision's layout."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(images) % 10
    return in_memory_splits("cifar10", pixels, labels, pixels[:10], labels[:10])


def _epoch(splits: Splits, loader: str, device: torch.device, batch: int, epoch: int, limit: int) -> tuple[int, float]:
    """Images drawn and seconds taken: the first ``limit`` images of one training epoch."""
    if loader == "device":
        batches = device_loader(splits.train, batch_size=batch, train=True, seed=0, epoch=epoch, device=device)
    else:
        batches = epoch_loader(splits.train, batch_size=batch, train=True, seed=0, epoch=epoch)
    count, started = 0, time.perf_counter()
    for images, _ in batches:
        count += len(images)
        if count >= limit:
            break
    synchronize(device)
    return count, time.perf_counter() - started


def run_loader_benchmark(device: str = "cpu", batch: int = 128, threads: int | None = 1, rounds: int = 3,
                         images: int = 50_000, workers_images: int = 10_240, progress: bool = True,
                         loaders=LOADER_PIPELINES) -> list[LoaderMeasurement]:
    """Each pipeline ``rounds`` times (interleaved), after one untimed epoch: ``images`` per round for the
    device pipeline (a whole epoch), the first ``workers_images`` of an epoch for the per-sample one."""
    target, threads, code_commit = prepare_run(device, threads or 1)
    splits = loader_splits(images)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limits = {"device": images, "workers": min(workers_images, images)}
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    with tqdm(total=(rounds + 1) * len(loaders), desc="loaders", unit="epoch", disable=not progress) as bar:
        for round_ in range(rounds + 1):
            for name in loaders:
                count, seconds = _epoch(splits, name, target, batch, round_, limits[name])
                if round_:  # round 0 warms up (and copies and mirrors the split for the device pipeline)
                    rates[name].append(count / seconds)
                bar.update()
    rows = []
    for name in loaders:
        rate = statistics.median(rates[name])
        rows.append(LoaderMeasurement(name, "cifar10", device_name(target), batch, threads, cores, limits[name],
                                      round(rate, 1), round(rate / threads, 1), [round(r, 1) for r in rates[name]],
                                      torch.__version__, code_commit))
    return rows
