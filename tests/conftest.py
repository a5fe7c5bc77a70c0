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
