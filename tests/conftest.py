"""Shared fixtures: tiny specs that train in seconds on a CPU under the smoke profile."""
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


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m replicate.run ...`` in a subprocess, as a user would type it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "replicate.run", *args, "--no-progress"], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def write_result(results: Path, table: str, row_id: str, seed: int, top1_err: float, *, profile: str = "full",
                 protocol: str | None = None, top5_err: float | None = None, epochs: int = 3) -> Path:
    """A finished run as the engine stores it (result.json + metrics.jsonl), for analysis tests."""
    import json

    from replicate import spec as specs
    from replicate.complexity import lookup
    from replicate.config import PROFILES
    from replicate.plan import run_config

    table_spec = specs.load(table)
    row = next(r for r in table_spec.rows if r.id == row_id)
    config = run_config(row, PROFILES[profile], seed, protocol)
    run_dir = results / table_spec.name / config.run_id
    run_dir.mkdir(parents=True)
    scores = {"epoch": epochs, "top1_err": top1_err, "top5_err": top5_err}
    counts = lookup(config.model, config.dataset)
    result = {"run_id": config.run_id, "table": table_spec.name, "row": row.id, "label": row.label,
              "config": config.to_dict(), "protocol": config.protocol, "selected": scores,
              "final": dict(scores, top1_err=top1_err + 0.1), "best": scores, "params": counts.params,
              "macs": counts.macs, "wall_time_s": 1.0, "provenance": {}}
    (run_dir / "result.json").write_text(json.dumps(result))
    metrics = [{"epoch": e, "eval_top1_err": top1_err + (epochs - e), "eval_split": "test", "train_ortho": 0.1 / e,
                "lr": 0.1, "train_loss": 1.0 / e} for e in range(1, epochs + 1)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return run_dir
