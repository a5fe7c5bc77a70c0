"""Build each (model, implementation) pair, time its training step and inference, measure its memory."""
from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import resource
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import UserError
from ..config import Training
from ..models import ModelSpec, build, fold
from ..ortho import Orthogonality
from ..results import code_version, device_name
from ..train import prepare_images, prepare_model
from .reference import ReferenceOrthogonality, reference_model

# torch.utils.benchmark imports the C++-extension module, which warns about a missing CUDA runtime on every
# CPU machine: noise in front of every output, --help included.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402

IMPLEMENTATIONS = ("replicate", "reference", "original", "folded", "compiled")
DEFAULT_IMPLEMENTATIONS = ("replicate", "reference", "original", "folded")
DEFAULT_MODELS = ("ResNet56@cifar10", "ResNet56-S16U1@cifar10", "ResNet56-S16U1*@cifar10",
                  "ResNet34@cifar100", "ResNet34-S32U1@cifar100")
CIFAR10_DEPTHS = (20, 32, 44, 56, 110, 1202)
LAMBDA_R = Training().lambda_r  # the benchmark keeps the term's real weight


@dataclass
class Measurement:
    """One row of the benchmark; times are medians in milliseconds, ``None`` where not applicable.

    ``train_step_rounds_ms`` holds the training step's median in each round, in round order, so that two rows
    of one run can be compared round by round (see :func:`ratios`).
    """

    model: str
    dataset: str
    implementation: str
    device: str
    batch: int
    threads: int
    train_step_ms: float | None = None
    ortho_ms: float | None = None
    infer_ms: float | None = None
    peak_mem_mb: float | None = None
    train_images_per_s: float | None = None
    infer_images_per_s: float | None = None
    measurements: int = 0
    torch_version: str = ""
    code_commit: str = ""
    train_step_rounds_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_model(token: str) -> ModelSpec:
    """``NAME[@DATASET]``; without a dataset, CIFAR-10 for the CIFAR-10 ResNet depths, else CIFAR-100."""
    name, _, dataset = token.partition("@")
    if not dataset:
        dataset = "cifar10" if _cifar10_depth(name) else "cifar100"
    return ModelSpec(name, dataset)


def _cifar10_depth(name: str) -> bool:
    head = name.split("-")[0].lower()
    return head.startswith("resnet") and head[6:].isdigit() and int(head[6:]) in CIFAR10_DEPTHS


def original_of(spec: ModelSpec) -> ModelSpec:
    """The unshared network of a model's family and depth (the model itself when it is original)."""
    return ModelSpec(spec.name.split("-")[0], spec.dataset)


def plan_pairs(models: Iterable[str], implementations: Iterable[str]) -> list[tuple[ModelSpec, str]]:
    """Which (model, implementation) pairs to measure, in order, each once.

    An original network is measured as ``original`` only; a shared model in every other implementation,
    and its family's original network is added when ``original`` is wanted.
    """
    pairs: list[tuple[ModelSpec, str]] = []
    wanted = list(implementations)
    for token in models:
        spec = resolve_model(token)
        if "original" in wanted:  # the unshared network is every shared model's yardstick
            pairs.append((original_of(spec), "original"))
        if spec.config.variant != "original":
            pairs += [(spec, kind) for kind in wanted if kind != "original"]
    return list(dict.fromkeys(pairs))


# -- one configuration --------------------------------------------------------------------------------------
class Subject:
    """A built (model, implementation): closures for one training step, the regulariser and inference."""

    def __init__(self, spec: ModelSpec, implementation: str, device: torch.device, batch: int) -> None:
        self.spec, self.implementation, self.device = spec, implementation, device
        torch.manual_seed(0)
        model = build(spec)
        size = model.config.input_size
        images = torch.randn(batch, 3, size, size)
        self.labels = torch.randint(0, model.config.num_classes, (batch,), device=device)
        self.regulariser: Callable[[], torch.Tensor] | None = None
        self.trainable = implementation != "folded"
        if implementation == "reference":
            self.model = reference_model(model).to(device)
            self.images = images.to(device)
            if model.shared_bases.groups:
                self.regulariser = ReferenceOrthogonality(self.model)
        else:
            if implementation == "folded":
                model = fold(model)
            self.model = prepare_model(model, device)
            self.images = prepare_images(images, device)
            if self.trainable and model.shared_bases.groups:
                self.regulariser = Orthogonality(self.model)
        self.network = torch.compile(self.model) if implementation == "compiled" else self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4) \
            if self.trainable else None

    def train_step(self) -> None:
        self.model.train()
        logits = self.network(self.images)
        loss = F.cross_entropy(logits.float(), self.labels)
        if self.regulariser is not None:
            loss = loss + LAMBDA_R * self.regulariser()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        synchronize(self.device)

    def ortho_step(self) -> None:
        self.regulariser().backward()
        synchronize(self.device)

    @torch.no_grad()
    def infer(self) -> None:
        self.model.eval()
        self.network(self.images)
        synchronize(self.device)

    def tasks(self) -> dict[str, Callable[[], None]]:
        tasks = {"infer": self.infer}
        if self.trainable:
            tasks["train"] = self.train_step
        if self.regulariser is not None:
            tasks["ortho"] = self.ortho_step
        return tasks


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare_run(device: str, threads: int | None) -> tuple[torch.device, int, str]:
    """The device, the thread count (set for torch) and the code commit a benchmark's rows are labelled with.

    The commit is read before measuring: the code that runs, whatever is edited meanwhile.
    """
    target = _resolve_device(device)
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    return target, threads, _current_commit()


def _current_commit() -> str:
    """The commit the rows are labelled with: 12 hex digits, ``-dirty`` when the tracked files differ."""
    code = code_version()
    return code["commit"][:12] + ("-dirty" if code["dirty"] else "")


# -- timing ---------------------------------------------------------------------------------------------------
def time_task(task: Callable[[], None], threads: int, min_time: float) -> list[float]:
    """Milliseconds per call over ``min_time`` seconds, after one untimed call.

    Training repeats a step, so no timed call may be the first after another configuration's (measured: that
    step of ResNet34-S32U1 ran 10-15 % slower, ours and the reference's alike).
    """
    task()
    timer = benchmark.Timer("task()", globals={"task": task}, num_threads=threads)
    measured = timer.blocked_autorange(min_run_time=min_time)
    return [t * 1e3 for t in measured.times]


def run_benchmark(models: Iterable[str] = DEFAULT_MODELS, implementations: Iterable[str] = DEFAULT_IMPLEMENTATIONS,
                  device: str = "cpu", batch: int = 128, threads: int | None = None, rounds: int = 6,
                  min_time: float = 1.0, memory: bool = True, progress: bool = True) -> list[Measurement]:
    """Measure every pair; each round times every pair once (warm-up first), medians over all rounds."""
    target, threads, code_commit = prepare_run(device, threads)
    pairs = plan_pairs(models, implementations)
    subjects = [Subject(config, kind, target, batch) for config, kind in pairs]
    samples: list[dict[str, list[list[float]]]] = [{} for _ in subjects]  # task -> one list per round
    for subject in subjects:  # warm-up: allocator, oneDNN primitive caches, cuDNN autotuning, compilation
        for task in subject.tasks().values():
            task()
            task()
    steps = [(i, name, task) for i, s in enumerate(subjects) for name, task in s.tasks().items()]
    with tqdm(total=rounds * len(steps), desc="bench", unit="timing", disable=not progress) as bar:
        for _ in range(rounds):
            for index, name, task in steps:
                samples[index].setdefault(name, []).append(time_task(task, threads, min_time))
                bar.update()
    rows = []
    for (config, kind), subject, sample in zip(pairs, subjects, samples):
        rows.append(_row(config, kind, target, batch, threads, sample, code_commit))
    del subjects
    gc.collect()
    if memory:
        for row, (config, kind) in zip(tqdm(rows, desc="memory", unit="run", disable=not progress), pairs):
            row.peak_mem_mb = peak_memory_mb(config, kind, device, batch, threads)
    return rows


def _row(config: ModelSpec, kind: str, device: torch.device, batch: int, threads: int,
         sample: dict[str, list[list[float]]], code_commit: str) -> Measurement:
    pooled = {name: [t for times in rounds for t in times] for name, rounds in sample.items()}
    median = {name: statistics.median(times) for name, times in pooled.items()}
    row = Measurement(config.name, config.dataset, kind, device_name(device), batch, threads,
                      train_step_ms=median.get("train"), ortho_ms=median.get("ortho"),
                      infer_ms=median.get("infer"), measurements=min(len(t) for t in pooled.values()),
                      torch_version=torch.__version__, code_commit=code_commit,
                      train_step_rounds_ms=[statistics.median(times) for times in sample.get("train", [])])
    if row.train_step_ms:
        row.train_images_per_s = batch / row.train_step_ms * 1e3
    if row.infer_ms:
        row.infer_images_per_s = batch / row.infer_ms * 1e3
    return row


def _resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible here; run with --device cpu")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}; choose cpu or cuda")
    return torch.device(name)


# -- memory ---------------------------------------------------------------------------------------------------
def peak_memory_mb(config: ModelSpec, kind: str, device: str, batch: int, threads: int) -> float:
    """Memory a training step (inference for ``folded``) needs beyond the model, optimizer state and batch.

    Measured in a fresh process after a warm-up step. CUDA: the allocator's peak minus what was allocated
    before the step. CPU (PyTorch does not track CPU allocations): freed heap memory is handed back to the
    OS, then the resident set size is sampled every 0.5 ms during the step; peak minus size before.
    """
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_peak_memory_child, (config.name, config.dataset, kind, device, batch, threads))


def _peak_memory_child(name: str, dataset: str, kind: str, device: str, batch: int, threads: int) -> float:
    torch.set_num_threads(threads)
    subject = Subject(ModelSpec(name, dataset), kind, torch.device(device), batch)
    step = subject.train_step if subject.trainable else subject.infer
    step()
    if device == "cuda":
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc: hand freed heap pages back to the OS,
    if trim is not None:                                     # so that the resident size tracks live memory
        trim(0)
    before = _resident_mb()
    with _ResidentPeak() as peak:
        step()
    return max(peak.mb - before, 0.0)


class _ResidentPeak:
    """Samples the resident set size in a thread (PyTorch kernels release the GIL) and keeps the maximum."""

    def __init__(self, interval: float = 5e-4) -> None:
        self.interval, self.mb = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.mb = max(self.mb, _resident_mb())
            time.sleep(self.interval)

    def __enter__(self) -> "_ResidentPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.mb = max(self.mb, _resident_mb())


def _resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


# -- the comparisons the issue sets targets on ----------------------------------------------------------------
def ratios(rows: list[Measurement]) -> list[dict]:
    """For each shared model: ours vs reference and vs the original network; regulariser share; folded.

    The training-step ratios are of the run's medians; ``*_rounds`` give the lowest and highest of the same
    ratio taken round by round. Both rows of a round were timed minutes apart at most, so that range shows
    how much the machine moved the comparison during the run (on a shared VM, more than some targets' margins).
    The run's ratio, of medians over all rounds' timings pooled, can fall just outside that range.
    """
    by_key = {(r.model, r.dataset, r.implementation): r for r in rows}
    out = []
    for row in rows:
        if row.implementation != "replicate":
            continue
        original = by_key.get((original_of(ModelSpec(row.model, row.dataset)).name, row.dataset, "original"))
        reference = by_key.get((row.model, row.dataset, "reference"))
        folded = by_key.get((row.model, row.dataset, "folded"))
        out.append({
            "model": row.model, "dataset": row.dataset,
            "train_vs_reference": _ratio(row.train_step_ms, reference and reference.train_step_ms),
            "train_vs_reference_rounds": _round_ratios(row, reference),
            "train_vs_original": _ratio(row.train_step_ms, original and original.train_step_ms),
            "train_vs_original_rounds": _round_ratios(row, original),
            "ortho_share": _ratio(row.ortho_ms, row.train_step_ms),
            "folded_infer_vs_original": _ratio(folded and folded.infer_ms, original and original.infer_ms),
            "infer_vs_original": _ratio(row.infer_ms, original and original.infer_ms),
        })
    return out


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def _round_ratios(row: Measurement, other: Measurement | None) -> list[float] | None:
    """[lowest, highest] of the training-step ratio round by round; None without paired rounds."""
    if other is None or not row.train_step_rounds_ms or \
            len(row.train_step_rounds_ms) != len(other.train_step_rounds_ms):
        return None
    paired = [_ratio(mine, theirs) for mine, theirs in zip(row.train_step_rounds_ms, other.train_step_rounds_ms)]
    return [min(paired), max(paired)]
