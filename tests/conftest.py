"""Shared fixtures: tiny specs that train in seconds on a CPU under the smoke profile."""
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

TINY_SPEC = """\
title: "Tiny test table"
dataset: cifar10
recipe: cifar10
rows:
  - {id: base, model: ResNet20-S4U1}
  - {id: plain, model: ResNet20}
"""

RESTART_SPEC = """\
title: "Tiny CIFAR-100-style schedule with restarts from the best checkpoint"
dataset: cifar10
recipe: cifar100
grad_stats: {every_batches: 2, every_epochs: 1}
rows:
  - {id: shared, model: ResNet20-S4U1}
"""


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


@pytest.fixture
def restart_spec(tmp_path: Path) -> Path:
    path = tmp_path / "restart.yaml"
    path.write_text(RESTART_SPEC)
    return path


def run_command(*cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@functools.lru_cache(maxsize=1)
def _slurm_status() -> tuple[bool, str]:
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        return False, ("no SLURM cluster: SLURM_CONF is not set "
                       "(bash slurm/start-local.sh && source /tmp/replicate-slurm/env.sh)")
    if not os.path.isfile(conf):
        return False, f"no SLURM cluster: SLURM_CONF={conf} does not exist (run slurm/start-local.sh)"
    try:
        proc = run_command("sinfo", "-h", "-o", "%P", timeout=15)
    except FileNotFoundError:
        return False, "no SLURM cluster: sinfo is not installed (run slurm/start-local.sh)"
    except subprocess.TimeoutExpired:
        return False, f"no SLURM cluster: sinfo timed out (SLURM_CONF={conf})"
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        return False, f"no SLURM cluster: sinfo failed ({err[-1] if err else proc.returncode})"
    return True, ""


def require_slurm_cluster() -> None:
    """Skip (with the reason) when no cluster answers; fail instead when CI started one and said so."""
    ok, reason = _slurm_status()
    if not ok and os.environ.get("REPLICATE_REQUIRE_SLURM") == "1":
        pytest.fail(reason)
    if not ok:
        pytest.skip(reason)


@pytest.fixture
def slurm_cluster() -> None:
    """Tests that submit to the local SLURM cluster (slurm/start-local.sh) take this fixture."""
    require_slurm_cluster()



def run_cli(*args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m replicate.run ...`` in a subprocess, as a user would type it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "replicate.run", *args, "--no-progress"], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def write_run(results: Path, table: str, row_id: str, seed: int, errors: list[float], profile: str = "full",
              protocol: str | None = None, finished: bool = True, gradstats: bool = False,
              precision: str | None = None) -> Path:
    """A run folder as the engine leaves it (config, metrics, gradient statistics, result written last),
    named by the run id that ``analysis.collect`` recomputes for the row."""
    import numpy as np

    from replicate.complexity import lookup
    from replicate.config import PROFILES
    from replicate.plan import run_config
    from replicate.results import RunFolder, RunResult, Scores

    row = next(r for r in _spec(table).rows if r.id == row_id)
    config = run_config(row, PROFILES[profile], seed, protocol, precision)
    folder = RunFolder(results / table / config.run_id)
    folder.write_config(config)
    split = "val" if config.protocol == "clean" else "test"
    metrics = [{"epoch": e + 1, "eval_split": split, "eval_top1_err": err, "eval_top1": 100 - err,
                "eval_top5_err": err / 4, "train_ortho": 0.5 / (e + 1) if config.training.orthogonality else 0.0,
                "train_loss": 1.0, "lr": 0.1, "best_epoch": e + 1, "wall_s": 1.0} for e, err in enumerate(errors)]
    records = {"metrics": metrics}
    if gradstats:
        scale = 1e-3 * (2 - row.training.orthogonality)
        records["gradstats"] = [{"epoch": e, "batch": b, "basis": f"stage{k}", "mean_abs": scale * (k + e),
                                 "max_abs": 1e-2 * (k + e), "l2": 0.1} for e in range(1, len(errors) + 1)
                                for b in (0, 5) for k in (1, 2, 3)]
    folder.append(records)
    if finished:
        best = int(np.argmin(errors))
        counts = lookup(config.model)
        folder.write_result(RunResult(
            run_id=config.run_id, config=config, table=table, row=row.id, label=row.label,
            selected=Scores(best + 1, errors[best], errors[best] / 4),
            final=Scores(len(errors), errors[-1], errors[-1] / 4),
            best=Scores(best + 1, errors[best], errors[best] / 4, split=split), params=counts.params,
            macs=counts.macs, wall_time_s=float(len(errors)), provenance={},
            execution={"bn_batch": config.recipe.batch_size // config.recipe.gpus}))
    return folder.path


@functools.lru_cache(maxsize=None)
def _spec(table: str):
    from replicate import spec as specs

    return specs.load(table)
