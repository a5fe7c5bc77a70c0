"""The training engine: one loop for every table, faithful to the paper's recipes (docs/paper.md: Training recipes).

SGD over all parameters (momentum 0.9, no Nesterov, weight decay on everything), per-epoch learning rates,
loss = cross-entropy + lambda_R * R (docs/paper.md: The orthogonality regulariser), CIFAR-100's restarts from the best checkpoint. Two protocols:

* ``paper``: every epoch is evaluated on the test set and the best epoch is reported (and selects the
  CIFAR-100 restarts), exactly as the authors did;
* ``clean``: a held-out validation split selects the epoch and the restarts; the test set is evaluated only at
  the end, for the selected and the final weights.

Cross-cutting instrumentation (gradient statistics) is a hook, not a copy of the loop. Each epoch ends with
an atomic checkpoint; a run restarted after a kill resumes from it and computes exactly what an uninterrupted
run computes (per-epoch seeding of data order and augmentation).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .complexity import lookup
from .config import RunConfig
from .datasets import Shard, Splits, build_splits, device_loader, epoch_loader, resolve_loader
from .models import build
from .ortho import Orthogonality
from .results import RunFolder, RunResult, Scores, device_name
from .seeding import Stream, derive
from .errors import UserError
from .atomic import load_checkpoint, save_checkpoint


class ForeignCheckpoint(UserError):
    """A run folder's checkpoint that does not fit the run's network."""


@dataclass
class Progress:
    """What a checkpoint must remember beyond weights and optimizer."""

    epoch: int = 0  # last completed epoch
    best_top1: float = -1.0  # best selection-split top-1 accuracy so far (%)
    best_epoch: int = 0


class GradStatsHook:
    """Mean |g|, max |g| and L2 norm of each shared basis's gradient, after backward and before the step.

    docs/paper.md: Gradient-flow measurement: logged at batches 0, N, 2N, ... of every M-th epoch (M = 2: the even epochs).
    """

    def __init__(self, model: nn.Module, every_batches: int, every_epochs: int) -> None:
        self.bases = dict(_unwrap(model).shared_bases.items())
        self.every_batches, self.every_epochs = every_batches, every_epochs
        self.records: list[dict] = []

    def __call__(self, epoch: int, batch: int) -> None:
        if epoch % self.every_epochs or batch % self.every_batches:
            return
        for name, basis in self.bases.items():
            grad = basis.weight.grad
            if grad is None:  # a basis that is never called (DenseNet's fourth)
                continue
            grad = grad.detach().float()
            self.records.append({"epoch": epoch, "batch": batch, "basis": name,
                                 "mean_abs": grad.abs().mean().item(), "max_abs": grad.abs().max().item(),
                                 "l2": grad.norm().item()})

    def drain(self) -> list[dict]:
        records, self.records = self.records, []
        return records


class TensorBoard:
    """The run's metrics as TensorBoard event files in ``<run>/tensorboard/`` (``run --tensorboard``), beside
    ``metrics.jsonl``, which stays the record: per epoch the losses, errors, learning rate and R; per logged
    batch the shared bases' gradient statistics. An epoch replayed after a kill is written again; TensorBoard's
    reader keeps the later events of a step that goes backwards."""

    EPOCH = {"lr": "lr", "loss/train": "train_loss", "loss/train_ce": "train_ce", "R/train": "train_ortho",
             "throughput/images_per_s": "images_per_s"}
    SPLIT = {"error": "eval_top1_err", "error_top5": "eval_top5_err", "loss": "eval_loss"}

    def __init__(self, folder: RunFolder, steps_per_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter  # the tensorboard package: only when asked for

        self.writer = SummaryWriter(log_dir=str(folder.path / "tensorboard"))
        self.steps_per_epoch = steps_per_epoch

    def write(self, record: dict, gradstats: list[dict]) -> None:
        epoch = record["epoch"]
        for tag, key in self.EPOCH.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], epoch)
        self.writer.add_scalar("error/train", 100 - record["train_top1"], epoch)
        for name, key in self.SPLIT.items():
            self.writer.add_scalar(f"{name}/{record['eval_split']}", record[key], epoch)
        for stat in gradstats:  # one global step per batch: (epoch - 1) x batches per epoch + batch
            step = (stat["epoch"] - 1) * self.steps_per_epoch + stat["batch"]
            for key in ("mean_abs", "max_abs", "l2"):
                self.writer.add_scalar(f"gradients/{stat['basis']}/{key}", stat[key], step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


@dataclass
class Environment:
    """Where a run executes: device and, under DistributedDataParallel, its rank among the processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    compile: bool = False  # torch.compile the network (REPLICATE_COMPILE=1): opt-in, an execution setting
    loader: str = "auto"  # input pipeline: device | workers | auto (device for in-memory data); same batches

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        """This process's part of every batch: the single-process batches split across the ranks (issue 27)."""
        return Shard(self.rank, self.world_size)

    @classmethod
    def detect(cls, device: str = "auto", loader: str | None = None) -> "Environment":
        """Single process, or one process per GPU as set up by torchrun or submitit (RANK/WORLD_SIZE);
        ``device`` auto takes CUDA when there is one; ``loader`` (else $REPLICATE_LOADER, else auto): the input
        pipeline."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        if device != "cpu" and torch.cuda.is_available():
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if world_size > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend, rank=rank, world_size=world_size)
        return cls(device, rank, world_size, compile=os.environ.get("REPLICATE_COMPILE", "0") == "1",
                   loader=loader or os.environ.get("REPLICATE_LOADER") or "auto")


# Reading the loss synchronises host and device; on CUDA doing it every step stalls the pipeline.
FINITE_CHECK_EVERY = 20


def _check_finite(loss: float, epoch: int, batch: int | str) -> None:
    """Stop a diverged run (checked on batches 0, 20, 40, ... and on the epoch's summed loss)."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss became {loss} at epoch {epoch}, batch {batch}")


def make_optimizer(model: nn.Module, config: RunConfig, lr: float) -> torch.optim.SGD:
    recipe = config.recipe
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay, nesterov=False)


@torch.no_grad()
def accuracy(model: nn.Module, data, env: Environment, batch_size: int, precision: str,
             progress: bool = False) -> dict:
    """Top-1/top-5 accuracy (%) and mean cross-entropy over a whole split (summed across processes): what an
    epoch is scored by (the CLI that evaluates checkpoints, replicate.evaluate, calls it too)."""
    model.eval()
    totals = torch.zeros(4, device=env.device)  # correct@1, correct@5, loss sum, count
    loader = _eval_batches(data, env, batch_size)
    for images, labels in tqdm(loader, desc="evaluate", unit="batch", leave=False, disable=not progress):
        images, labels = prepare_images(images, env.device), labels.to(env.device, non_blocking=True)
        with autocast(env.device, precision):
            logits = model(images).float()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top5 == labels[:, None]
        totals += torch.stack([hits[:, 0].sum(), hits.any(1).sum(),
                               F.cross_entropy(logits, labels, reduction="sum"),
                               torch.tensor(len(labels), device=env.device)]).float()
    if env.world_size > 1:
        torch.distributed.all_reduce(totals)
    correct1, correct5, loss, count = totals.tolist()
    return {"top1": 100 * correct1 / count, "top5": 100 * correct5 / count, "loss": loss / count}


def _eval_batches(data, env: Environment, batch_size: int):
    """A split's evaluation batches from the environment's input pipeline (the same batches either way). Under
    DDP each process takes its part of batches ``world`` times larger, so that every sample is evaluated
    exactly once (no padding, unlike DistributedSampler's) in batches of ``batch_size``."""
    kwargs = dict(batch_size=batch_size * env.world_size, train=False, seed=0, epoch=0, shard=env.shard)
    if resolve_loader(env.loader, data) == "device":
        return device_loader(data, device=env.device, **kwargs)
    return epoch_loader(data, pin_memory=env.device.type == "cuda", **kwargs)


# -- how tensors are laid out and computed (shared with the benchmark, ``replicate.bench``) ---------------
# channels_last on every device: on CUDA for tensor cores, on CPU because oneDNN's convolutions are faster
# in it (training step on 2 cores: ResNet56 -11 to -25 %, ResNet34-S32U1 -13 % at batch 128, MobileNetV2
# -29 %, DenseNet121 -23 % at batch 32) and the fused basis-BN/coefficients operator (``models.fused``)
# needs it. Arithmetic in float32 as the authors trained (PyTorch's default TF32 convolutions on GPUs that
# have them); bf16 autocast only when a run's precision asks for it (part of its config and id).

def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    return model.to(device).to(memory_format=torch.channels_last)


def prepare_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Trainer:
    """Trains one run into its results folder; ``run()`` resumes from whatever the folder holds."""

    def __init__(self, config: RunConfig, folder: RunFolder, *, data_root=None, download: bool = False,
                 progress: bool = True, log: Callable[[str], None] = print, meta: dict | None = None,
                 env: Environment | None = None, tensorboard: bool = False) -> None:
        self.config, self.folder = config, folder
        self.data_root, self.download, self.progress, self.log = data_root, download, progress, log
        self.meta = meta or {}
        self.env = env or Environment.detect()
        self.tensorboard = tensorboard  # also write TensorBoard event files (rank 0)
        self.board: TensorBoard | None = None

    @property
    def who(self) -> str:
        """'c10-single seed 1': what each epoch line and bar belongs to (the row, else the network)."""
        return f"{self.meta.get('row') or self.config.model.name} seed {self.config.seed}"

    # -- set-up -------------------------------------------------------------------------------------------
    def _build(self) -> None:
        config, env = self.config, self.env
        torch.manual_seed(derive(config.seed, Stream.INIT))  # the initial weights
        if env.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.splits: Splits = build_splits(
            config.data, root=self.data_root, download=self.download,
            validation=config.held_out, seed=config.seed,
            synthetic=config.synthetic, train_subset=config.train_subset,
            synthetic_sizes=config.synthetic_sizes)
        model = prepare_model(build(config.model), env.device)
        self.model = model
        self.regulariser = Orthogonality(model, config.training.ortho_mode) \
            if config.training.orthogonality and model.shared_bases.groups else None
        self.network = model
        if env.world_size > 1:
            # find_unused_parameters: DenseNet's fourth basis is never called, and with it DDP keeps its first
            # gradient buckets instead of rebuilding them after the first step. The buckets decide the order in
            # which the ranks' gradients are summed, so a run resumed after a requeue (whose first step would
            # otherwise use other buckets) computes exactly what an uninterrupted one computes.
            self.network = nn.parallel.DistributedDataParallel(
                model, device_ids=[env.device] if env.device.type == "cuda" else None, find_unused_parameters=True)
        if env.compile:  # weights, checkpoints and the regulariser stay on the uncompiled ``model``
            self.network = torch.compile(self.network)
        every_batches, every_epochs = config.grad_stats
        self.grad_hook = GradStatsHook(model, every_batches, every_epochs) if every_batches else None
        self.optimizer = make_optimizer(self.network, config, config.recipe.lr_at(1))

    @property
    def checkpoints(self) -> Path:
        return self.folder.checkpoints

    def _load_weights(self, weights: dict, name: str) -> None:
        """A checkpoint of another network (copied from another run, say) is one line naming the file and the
        fix, not PyTorch's list of every missing key."""
        try:
            self.model.load_state_dict(weights)
        except RuntimeError:
            raise ForeignCheckpoint(f"{self.checkpoints / name}.pt holds the weights of another network than this "
                                    f"run's {self.config.model.label}: move it (or the run folder "
                                    f"{self.folder.path}) away and relaunch") from None

    def _resume(self) -> Progress:
        """Restore the last checkpoint and make the logs agree with it, whatever instant the run died at."""
        state = load_checkpoint(self.checkpoints, "last")
        progress = Progress(**state["progress"]) if state else Progress()
        if state is not None:
            self._load_weights(state["model"], "last")
            self.optimizer.load_state_dict(state["optimizer"])
            self.log(f"resuming {self.folder.run_id} after epoch {progress.epoch}")
        if self.env.is_main:
            self.folder.reconcile(progress.epoch, (state or {}).get("records", {}))
        return progress

    def _steps_per_epoch(self) -> int:
        return math.ceil(len(self.splits.train) / self.config.recipe.batch_size)  # every rank takes every step

    def _here(self) -> dict:
        return {"device": device_name(self.env.device), "threads": torch.get_num_threads()}

    def _check_where(self, epoch: int) -> None:
        """A resume on another device or thread count than the run started on: floating-point sums change, so the
        run no longer ends exactly as an uninterrupted one would. Say so in one line and record it (issue 28)."""
        warning = self.folder.resumed_elsewhere(epoch, self._here())
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Train (or resume) the run; raises ``store.Busy`` if another process is training it."""
        self._build()
        if not self.env.is_main:
            return self._run()
        with self.folder.lock():
            try:
                return self._run()
            finally:
                if self.board is not None:
                    self.board.close()

    def _run(self) -> RunResult:
        if self.env.is_main:
            self.folder.write_config(self.config)
            self.folder.record_provenance(device_name(self.env.device))
        progress = self._resume()
        if self.env.is_main and progress.epoch:
            self._check_where(progress.epoch)
        if self.env.is_main and self.tensorboard:
            self.board = TensorBoard(self.folder, self._steps_per_epoch())
        recipe = self.config.recipe
        for epoch in range(progress.epoch + 1, recipe.epochs + 1):
            epoch_started = time.time()
            self._start_phase(epoch, progress)
            record = self._train_epoch(epoch)
            record.update(self._select(epoch, progress))
            record["wall_s"] = time.time() - epoch_started
            self._end_epoch(record, progress)
        return self._finish(progress)

    def _best_name(self, progress: Progress) -> str:
        """Best weights are saved per epoch, so a crash can never leave a newer best than the progress says."""
        return f"best-{progress.best_epoch}"

    def _start_phase(self, epoch: int, progress: Progress) -> None:
        phase = self.config.recipe.phase_at(epoch)
        if phase.start == epoch and phase.restart and epoch > 1:
            best = load_checkpoint(self.checkpoints, self._best_name(progress))
            if best is not None:  # docs/paper.md: Training recipes: weights (and BN statistics) of the best epoch, new optimizer
                self._load_weights(best["model"], self._best_name(progress))
            self.optimizer = make_optimizer(self.network, self.config, phase.lr)
            self.log(f"{self.who}: epoch {epoch}: restart from the best checkpoint (epoch {progress.best_epoch}), "
                     f"lr {phase.lr}")
        for group in self.optimizer.param_groups:
            group["lr"] = phase.lr

    def _train_epoch(self, epoch: int) -> dict:
        config, env = self.config, self.env
        torch.manual_seed(derive(config.seed, Stream.EPOCH, epoch))  # what dropout draws from
        loader = self._epoch_batches(epoch)
        self.network.train()
        totals = torch.zeros(4, dtype=torch.float64, device=env.device)  # loss, ce, ortho, correct (sums)
        count = 0
        started = time.time()
        bar = tqdm(loader, desc=f"{self.who} epoch {epoch}/{config.recipe.epochs}", leave=False, unit="batch",
                   disable=not (self.progress and env.is_main and sys.stderr.isatty()))  # a terminal only
        for batch, (images, labels) in enumerate(bar):
            images = prepare_images(images, env.device)
            labels = labels.to(env.device, non_blocking=True)
            with autocast(env.device, config.training.precision):
                logits = self.network(images)
            ce = F.cross_entropy(logits.float(), labels)
            ortho = self.regulariser() if self.regulariser is not None else torch.zeros((), device=env.device)
            loss = ce + config.training.lambda_r * ortho
            if batch % FINITE_CHECK_EVERY == 0:
                sampled = loss.item()  # one device synchronisation per sampled step
                _check_finite(sampled, epoch, batch)
                bar.set_postfix(loss=f"{sampled:.3f}", refresh=False)
            self.optimizer.zero_grad(set_to_none=True)
            weight = self._part_weight(batch, len(labels))
            (loss if weight == 1 else ce * weight + config.training.lambda_r * ortho).backward()
            if self.grad_hook is not None:
                self.grad_hook(epoch, batch)
            self.optimizer.step()
            with torch.no_grad():
                totals += torch.stack([loss * len(labels), ce * len(labels), ortho * len(labels),
                                       (logits.argmax(1) == labels).sum()]).double()
            count += len(labels)
        loss_sum, ce_sum, ortho_sum, correct = totals.tolist()  # the epoch's one device synchronisation
        _check_finite(loss_sum, epoch, "end")
        seconds = time.time() - started
        images = max(count, 1)
        return {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": loss_sum / images, "train_ce": ce_sum / images,
                "train_ortho": ortho_sum / images, "train_top1": 100 * correct / images,
                "epoch_time_s": seconds, "images_per_s": count * self.env.world_size / seconds}

    def _loader(self) -> str:
        return resolve_loader(self.env.loader, self.splits.train)

    def _part_weight(self, batch: int, part: int) -> float:
        """DDP averages the ranks' gradients, so a rank's mean loss counts 1/world. Where the parts of a (last)
        batch differ in size, weighting a rank's cross-entropy by part·world/batch makes that average the
        whole batch's mean, as one process computes it. Exactly 1 for equal parts and for one process."""
        size = self.config.recipe.batch_size
        whole = min(size, len(self.splits.train) - batch * size)
        return part * self.env.world_size / whole

    def _epoch_batches(self, epoch: int):
        """The epoch's training batches from the chosen input pipeline; both give the same batches (issue 31).
        Under DDP, this process's part of each single-process batch (:class:`~replicate.datasets.Shard`)."""
        kwargs = dict(batch_size=self.config.recipe.batch_size, train=True, seed=self.config.seed, epoch=epoch,
                      shard=self.env.shard)
        if self._loader() == "device":
            return device_loader(self.splits.train, device=self.env.device, **kwargs)
        return epoch_loader(self.splits.train, workers=_workers(self.env),
                            pin_memory=self.env.device.type == "cuda", **kwargs)

    def _selection_split(self):
        return self.splits.select if self.config.selection_split == "val" else self.splits.test

    def _select(self, epoch: int, progress: Progress) -> dict:
        scores = self._score(self._selection_split())
        split = self.config.selection_split
        improved = scores["top1"] > progress.best_top1
        if improved:
            progress.best_top1, progress.best_epoch = scores["top1"], epoch
            if self.env.is_main:
                save_checkpoint(self.checkpoints, self._best_name(progress),
                                {"model": self.model.state_dict(), "epoch": epoch, "top1": scores["top1"]},
                                keep_previous=False)
        return {"eval_split": split, "eval_top1": scores["top1"], "eval_top5": scores["top5"],
                "eval_loss": scores["loss"], "eval_top1_err": 100 - scores["top1"],
                "eval_top5_err": 100 - scores["top5"], "best_epoch": progress.best_epoch}

    def _end_epoch(self, record: dict, progress: Progress) -> None:
        """Checkpoint first (with this epoch's log records inside), then append the logs."""
        progress.epoch = record["epoch"]
        if self.env.is_main:
            records = {"metrics": [record],
                       "gradstats": self.grad_hook.drain() if self.grad_hook is not None else []}
            save_checkpoint(self.checkpoints, "last", {"model": self.model.state_dict(),
                                                       "optimizer": self.optimizer.state_dict(),
                                                       "progress": asdict(progress), "records": records})
            self.folder.append(records)
            if self.board is not None:
                self.board.write(record, records["gradstats"])
            for stale in self.checkpoints.glob("best-*.pt"):  # only the best the progress points to
                if stale.stem != self._best_name(progress):
                    stale.unlink()
        if self.env.world_size > 1:  # no rank reads a checkpoint (a restart's best) before rank 0 wrote it
            torch.distributed.barrier()
        self.log(f"{self.who}: epoch {record['epoch']:>3}/{self.config.recipe.epochs}  lr {record['lr']:.4g}  "
                 f"loss {record['train_loss']:.4f} (ce {record['train_ce']:.4f}, ortho "
                 f"{record['train_ortho']:.3g})  train {record['train_top1']:.2f}%  "
                 f"{record['eval_split']} top-1 err {record['eval_top1_err']:.2f}%  "
                 f"{record['images_per_s']:.0f} img/s")

    # -- reporting ----------------------------------------------------------------------------------------
    def _score(self, split) -> dict:
        return accuracy(self.network, split, self.env, self.config.recipe.batch_size, self.config.training.precision)

    def _finish(self, progress: Progress) -> RunResult:
        metrics = self.folder.records("metrics") if self.env.is_main else []
        by_epoch = {m["epoch"]: m for m in metrics}
        if self.config.selection_split == "val":  # the test set is scored only now
            final = _test_scores(self._score(self.splits.test), progress.epoch)
            selected = final
            if progress.best_epoch != progress.epoch:  # the selected weights differ from the final ones
                name = self._best_name(progress)
                self._load_weights(load_checkpoint(self.checkpoints, name)["model"], name)
                selected = _test_scores(self._score(self.splits.test), progress.best_epoch)
            selected = replace(selected, epoch=progress.best_epoch,
                               val_top1_err=by_epoch.get(progress.best_epoch, {}).get("eval_top1_err"))
        else:
            final = _epoch_scores(by_epoch.get(progress.epoch, {}), progress.epoch)
            selected = _epoch_scores(by_epoch.get(progress.best_epoch, {}), progress.best_epoch)
        best_record = max(metrics, key=lambda m: m["eval_top1"], default={})
        counts = lookup(self.config.model)
        result = RunResult(
            run_id=self.config.run_id, config=self.config, selected=selected, final=final,
            best=replace(_epoch_scores(best_record, best_record.get("epoch")), split=best_record.get("eval_split")),
            params=counts.params, macs=counts.macs,
            wall_time_s=round(sum(m.get("wall_s", 0.0) for m in metrics), 2),
            provenance=self.folder.provenance(), execution=self._execution(), **self.meta)
        if self.env.is_main:
            self.folder.write_result(result)
        return result

    def _execution(self) -> dict:
        """Where and how the run trained: what can change its numbers without changing its config."""
        return {"device": device_name(self.env.device), "threads": torch.get_num_threads(),
                "world_size": self.env.world_size,
                "bn_batch": self.config.recipe.batch_size // self.env.world_size, "loader": self._loader(),
                **(self.folder.where_it_ran() if self.env.is_main else {})}


def _epoch_scores(record: dict, epoch: int | None) -> Scores:
    return Scores(epoch, record.get("eval_top1_err"), record.get("eval_top5_err"))


def _test_scores(scores: dict, epoch: int) -> Scores:
    return Scores(epoch, 100 - scores["top1"], 100 - scores["top5"])


def _workers(env: Environment) -> int:
    if env.device.type == "cuda":
        return min(8, os.cpu_count() or 1)
    return 0

