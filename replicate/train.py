"""The training engine: one loop for every table, faithful to the paper's recipes (SPEC §4).

SGD over all parameters (momentum 0.9, no Nesterov, weight decay on everything), per-epoch learning rates,
loss = cross-entropy + lambda_R * R (SPEC §2), CIFAR-100's restarts from the best checkpoint. Two protocols:

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
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .complexity import count_macs, count_params, lookup
from .config import RunConfig
from .datasets import Splits, build_splits, epoch_loader
from .models import create
from .ortho import Orthogonality
from .results import device_name, provenance
from .store import (append_jsonl, atomic_write_json, exclusive, load_checkpoint, read_jsonl, save_checkpoint,
                    truncate_jsonl)


@dataclass
class Progress:
    """What a checkpoint must remember beyond weights and optimizer."""

    epoch: int = 0  # last completed epoch
    best_top1: float = -1.0  # best selection-split top-1 accuracy so far (%)
    best_epoch: int = 0


class GradStatsHook:
    """Mean |g|, max |g| and L2 norm of each shared basis's gradient, after backward and before the step.

    SPEC §5: logged at batches 0, N, 2N, ... of every M-th epoch (M = 2: the even epochs).
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


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


@dataclass
class Environment:
    """Where a run executes: device and, under DistributedDataParallel, its rank among the processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    compile: bool = False  # torch.compile the network (REPLICATE_COMPILE=1): opt-in, an execution setting

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def detect(cls) -> "Environment":
        """Single process, or one process per GPU as set up by torchrun or submitit (RANK/WORLD_SIZE)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if world_size > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend, rank=rank, world_size=world_size)
        return cls(device, rank, world_size, compile=os.environ.get("REPLICATE_COMPILE", "0") == "1")


# Reading the loss synchronises host and device; on CUDA doing it every step stalls the pipeline.
FINITE_CHECK_EVERY = 20


def _check_finite(loss: float, epoch: int, batch: int | str) -> None:
    """Stop a diverged run (checked on batches 0, 20, 40, ... and on the epoch's summed loss)."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss became {loss} at epoch {epoch}, batch {batch}")


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def make_optimizer(model: nn.Module, config: RunConfig, lr: float) -> torch.optim.SGD:
    recipe = config.recipe
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay, nesterov=False)


@torch.no_grad()
def evaluate(model: nn.Module, data, env: Environment, batch_size: int) -> dict:
    """Top-1/top-5 accuracy (%) and mean cross-entropy over a whole split (summed across processes)."""
    model.eval()
    sampler = None
    if env.world_size > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(data, shuffle=False)
    totals = torch.zeros(4, device=env.device)  # correct@1, correct@5, loss sum, count
    for images, labels in epoch_loader(data, batch_size=batch_size, train=False, seed=0, epoch=0,
                                       sampler=sampler, pin_memory=env.device.type == "cuda"):
        images, labels = prepare_images(images, env.device), labels.to(env.device, non_blocking=True)
        with autocast(env.device):
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


# -- how tensors are laid out and computed (shared with the benchmark, ``replicate.bench``) ---------------
# channels_last on every device: on CUDA for tensor cores, on CPU because oneDNN's convolutions are faster
# in it (training step on 2 cores: ResNet56 -11 to -25 %, ResNet34-S32U1 -13 % at batch 128, MobileNetV2
# -29 %, DenseNet121 -23 % at batch 32) and the fused basis-BN/coefficients operator (``models.fused``)
# needs it. bf16 autocast on CUDA only.

def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    return model.to(device).to(memory_format=torch.channels_last)


def prepare_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Trainer:
    """Trains one run into its results folder; ``run()`` resumes from whatever the folder holds."""

    def __init__(self, config: RunConfig, run_dir: Path, *, data_root=None, download: bool = False,
                 progress: bool = True, log: Callable[[str], None] = print, meta: dict | None = None,
                 env: Environment | None = None) -> None:
        self.config, self.run_dir = config, Path(run_dir)
        self.data_root, self.download, self.progress, self.log = data_root, download, progress, log
        self.meta = meta or {}
        self.env = env or Environment.detect()

    # -- set-up -------------------------------------------------------------------------------------------
    def _build(self) -> None:
        config, env = self.config, self.env
        torch.manual_seed(config.seed)
        if env.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.splits: Splits = build_splits(
            config.data, root=self.data_root, download=self.download,
            validation=config.recipe.validation if config.protocol == "clean" else 0, seed=config.seed,
            synthetic=config.synthetic, train_subset=config.train_subset,
            synthetic_sizes=config.synthetic_sizes)
        model = prepare_model(create(config.model, config.dataset, sharing_depth=config.sharing_depth,
                                     unshared_bn=config.unshared_bn), env.device)
        self.model = model
        self.regulariser = Orthogonality(model, config.ortho_mode) \
            if config.orthogonality and model.shared_bases.groups else None
        self.network = model
        if env.world_size > 1:
            unused = any(not g.users for g in model.shared_bases.groups)  # DenseNet's never-called basis
            self.network = nn.parallel.DistributedDataParallel(
                model, device_ids=[env.device] if env.device.type == "cuda" else None,
                find_unused_parameters=unused)
        if env.compile:  # weights, checkpoints and the regulariser stay on the uncompiled ``model``
            self.network = torch.compile(self.network)
        every_batches, every_epochs = config.grad_stats
        self.grad_hook = GradStatsHook(model, every_batches, every_epochs) if every_batches else None
        self.optimizer = make_optimizer(self.network, config, config.recipe.lr_at(1))

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    def _resume(self) -> Progress:
        """Restore the last checkpoint and make the logs agree with it, whatever instant the run died at."""
        state = load_checkpoint(self.checkpoints, "last")
        progress = Progress(**state["progress"]) if state else Progress()
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.log(f"resuming {self.run_dir.name} after epoch {progress.epoch}")
        if self.env.is_main:
            for name, records in (state or {}).get("records", {"metrics": [], "gradstats": []}).items():
                self._reconcile(self.run_dir / f"{name}.jsonl", progress.epoch, records)
        return progress

    @staticmethod
    def _reconcile(path: Path, epoch: int, checkpointed: list[dict]) -> None:
        """Drop log records past the checkpoint; restore the checkpoint's own epoch if its append was lost."""
        truncate_jsonl(path, lambda record: record["epoch"] <= epoch)
        if checkpointed and not any(r["epoch"] == epoch for r in read_jsonl(path)):
            append_jsonl(path, checkpointed)

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train (or resume) the run; raises ``store.Busy`` if another process is training it."""
        self._build()
        if not self.env.is_main:
            return self._run()
        with exclusive(self.run_dir):
            return self._run()

    def _run(self) -> dict:
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.run_dir / "config.json", self.config.to_dict())
            if not (self.run_dir / "provenance.json").exists():
                atomic_write_json(self.run_dir / "provenance.json", provenance(device_name(self.env.device)))
        progress = self._resume()
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
            if best is not None:  # SPEC §4.2: weights (and BN statistics) of the best epoch, new optimizer
                self.model.load_state_dict(best["model"])
            self.optimizer = make_optimizer(self.network, self.config, phase.lr)
            self.log(f"epoch {epoch}: restart from the best checkpoint (epoch {progress.best_epoch}), "
                     f"lr {phase.lr}")
        for group in self.optimizer.param_groups:
            group["lr"] = phase.lr

    def _train_epoch(self, epoch: int) -> dict:
        config, env = self.config, self.env
        torch.manual_seed(epoch_seed(config.seed, epoch))
        sampler = None
        if env.world_size > 1:
            sampler = torch.utils.data.distributed.DistributedSampler(self.splits.train, seed=config.seed)
            sampler.set_epoch(epoch)
        loader = epoch_loader(self.splits.train, batch_size=config.recipe.batch_size // env.world_size,
                              train=True, seed=config.seed, epoch=epoch, sampler=sampler,
                              workers=_workers(env), pin_memory=env.device.type == "cuda")
        self.network.train()
        totals = torch.zeros(4, dtype=torch.float64, device=env.device)  # loss, ce, ortho, correct (sums)
        count = 0
        started = time.time()
        bar = tqdm(loader, desc=f"epoch {epoch}/{config.recipe.epochs}", leave=False,
                   disable=not (self.progress and env.is_main), unit="batch")
        for batch, (images, labels) in enumerate(bar):
            images = prepare_images(images, env.device)
            labels = labels.to(env.device, non_blocking=True)
            with autocast(env.device):
                logits = self.network(images)
            ce = F.cross_entropy(logits.float(), labels)
            ortho = self.regulariser() if self.regulariser is not None else torch.zeros((), device=env.device)
            loss = ce + config.lambda_r * ortho
            if batch % FINITE_CHECK_EVERY == 0:
                _check_finite(loss.item(), epoch, batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
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

    def _selection_split(self):
        return self.splits.select if self.config.protocol == "clean" else self.splits.test

    def _select(self, epoch: int, progress: Progress) -> dict:
        scores = evaluate(self.network, self._selection_split(), self.env, self.config.recipe.batch_size)
        split = "val" if self.config.protocol == "clean" else "test"
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
            for name, lines in records.items():
                append_jsonl(self.run_dir / f"{name}.jsonl", lines)
            for stale in self.checkpoints.glob("best-*.pt"):  # only the best the progress points to
                if stale.stem != self._best_name(progress):
                    stale.unlink()
        self.log(f"epoch {record['epoch']:>3}/{self.config.recipe.epochs}  lr {record['lr']:.4g}  "
                 f"loss {record['train_loss']:.4f} (ce {record['train_ce']:.4f}, ortho "
                 f"{record['train_ortho']:.3g})  train {record['train_top1']:.2f}%  "
                 f"{record['eval_split']} top-1 err {record['eval_top1_err']:.2f}%  "
                 f"{record['images_per_s']:.0f} img/s")

    # -- reporting ----------------------------------------------------------------------------------------
    def _complexity(self) -> dict:
        """Params counted on the model itself; MACs from the cache unless the config changes them."""
        config = self.config
        if config.unshared_bn:
            macs = lookup(config.model, config.dataset).macs
        else:
            macs = count_macs(self.model, self.model.config.input_size)[0]
        return {"params": count_params(self.model), "macs": macs}

    def _finish(self, progress: Progress) -> dict:
        metrics = read_jsonl(self.run_dir / "metrics.jsonl") if self.env.is_main else []
        by_epoch = {m["epoch"]: m for m in metrics}
        batch = self.config.recipe.batch_size
        if self.config.protocol == "clean":
            final = self._test_scores(evaluate(self.network, self.splits.test, self.env, batch), progress.epoch)
            selected = dict(final, epoch=progress.best_epoch)
            if progress.best_epoch != progress.epoch:  # the selected weights differ from the final ones
                self.model.load_state_dict(load_checkpoint(self.checkpoints, self._best_name(progress))["model"])
                selected = self._test_scores(evaluate(self.network, self.splits.test, self.env, batch),
                                             progress.best_epoch)
            selected["val_top1_err"] = by_epoch.get(progress.best_epoch, {}).get("eval_top1_err")
        else:
            final = self._epoch_scores(by_epoch.get(progress.epoch, {}), progress.epoch)
            selected = self._epoch_scores(by_epoch.get(progress.best_epoch, {}), progress.best_epoch)
        best_record = max(metrics, key=lambda m: m["eval_top1"], default={})
        result = {
            "run_id": self.config.run_id, **self.meta, "config": self.config.to_dict(),
            "protocol": self.config.protocol, "selected": selected, "final": final,
            "best": self._epoch_scores(best_record, best_record.get("epoch")) | {
                "split": best_record.get("eval_split")},
            **self._complexity(),
            "wall_time_s": round(sum(m.get("wall_s", 0.0) for m in metrics), 2),
            "provenance": _read_json(self.run_dir / "provenance.json"),
        }
        if self.env.is_main:
            atomic_write_json(self.run_dir / "result.json", result)
        return result

    @staticmethod
    def _epoch_scores(record: dict, epoch: int | None) -> dict:
        return {"epoch": epoch, "top1_err": record.get("eval_top1_err"), "top5_err": record.get("eval_top5_err")}

    @staticmethod
    def _test_scores(scores: dict, epoch: int) -> dict:
        return {"epoch": epoch, "top1_err": 100 - scores["top1"], "top5_err": 100 - scores["top5"]}


def _workers(env: Environment) -> int:
    if env.device.type == "cuda":
        return min(8, os.cpu_count() or 1)
    return 0


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
