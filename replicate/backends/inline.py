"""The ``inline`` backend: every run trained in this process, one after the other (pdb-able).

It and ``local`` train on this machine, so they share the device check and the device that prices a dry run.
"""
from __future__ import annotations

import sys

from tqdm import tqdm

from ..config import PROFILES
from ..errors import UserError
from ..plan import PlannedRun
from .base import Backend
from .job import LaunchOptions, Outcome, RunJob

CPU_TFLOPS = 0.1  # sustained training throughput of a 2-core CPU (ResNet56, batch 128: about 1 s a step)


class InlineBackend(Backend):
    name = "inline"
    help = "this process"

    def check(self, runs: list[PlannedRun], options: LaunchOptions, dry_run: bool) -> None:
        if not dry_run:
            check_device(runs, options.device)

    def device_kind(self, options: LaunchOptions) -> str | None:
        """This machine's device: CUDA unless --device cpu."""
        import torch

        from ..results import device_name

        cuda = options.device != "cpu" and torch.cuda.is_available()
        return device_name(torch.device("cuda" if cuda else "cpu"))

    def submit(self, runs: list[PlannedRun], options: LaunchOptions) -> dict[str, Outcome]:
        """Train runs one after the other in this process."""
        outcome = {}
        bar = tqdm(runs, desc="runs", unit="run", disable=None if options.progress else True, file=sys.stderr)
        for run in bar:
            bar.set_postfix_str(f"{run.row.id} seed {run.config.seed}")
            job = RunJob.of(run, options, progress=options.progress and sys.stderr.isatty())
            outcome[run.run_id] = job()
        return outcome

    def wait(self, runs: list[PlannedRun], options: LaunchOptions) -> dict[str, Outcome]:
        return {}  # every run ended within submit


def check_device(runs: list[PlannedRun], device: str) -> None:
    """A full-profile run trains on a GPU: on a machine without one, refuse unless --device cpu says so."""
    import torch

    if device == "cpu":
        return
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: this machine has no CUDA device; use --device cpu or another machine")
    if torch.cuda.is_available() or not any(PROFILES[r.config.profile].needs_gpu for r in runs):
        return
    hours = sum(run.gpu_hours(CPU_TFLOPS) for run in runs)
    profile = runs[0].config.profile
    raise UserError(f"the {profile} profile trains on a GPU and this machine has none (device: cpu, "
                    f"{torch.get_num_threads()} threads): {len(runs)} run(s) would take about {hours:,.0f} "
                    f"CPU-hours here; add --device cpu to train on the CPU anyway, or use --profile smoke or mini")
