"""Shared fixtures: tiny specs that train in seconds on a CPU under the smoke profile."""
import dataclasses
import functools
import json
import os
import subprocess
import sys
import time
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


def skip_or_fail(reason: str) -> None:
    """Skip a test the cluster cannot serve; fail it instead when CI started the cluster and said so."""
    if os.environ.get("REPLICATE_REQUIRE_SLURM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def require_slurm_cluster() -> None:
    """Skip (with the reason) when no cluster answers; fail instead when CI started one and said so."""
    ok, reason = _slurm_status()
    if not ok:
        skip_or_fail(reason)


@pytest.fixture
def slurm_cluster() -> None:
    """Tests that submit to the local SLURM cluster (slurm/start-local.sh) take this fixture."""
    require_slurm_cluster()


def put_on_path(monkeypatch: pytest.MonkeyPatch, bin_dir: Path, scripts: dict[str, str]) -> None:
    """Shell scripts named like real commands, first on PATH: a command's answers without the command."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def run_cli(*args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m replicate.run ...`` in a subprocess, as a user would type it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "replicate.run", *args, "--no-progress"], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


# -- the CLIs called in this process (issue 27): the exit status and the output a shell would see, without
#    paying for a fresh interpreter and its torch import on every call ------------------------------------------
@dataclasses.dataclass
class Completed:
    """What an in-process CLI call left, with the fields of ``subprocess.CompletedProcess`` that tests read."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def cli_main(command: str):
    """The ``main(argv)`` behind ``python -m replicate.<command>``."""
    import importlib

    module = importlib.import_module(f"replicate.{command}")
    return getattr(module, "main", None) or importlib.import_module(f"replicate.{command}.__main__").main


def call_cli(command: str, *args: str, env: dict | None = None) -> Completed:
    """``python -m replicate.<command> ARGS`` as an in-process call of its ``main``, in the checkout (as
    :func:`run_cli` runs it) with ``env`` added to the environment for the call only.

    The exit status is what the shell would see (``main``'s return value, or argparse's ``SystemExit``); stderr
    carries every warning raised during the call, as a fresh interpreter would print it (its default filters),
    so a check that stderr is one line holds as strictly as it did in a subprocess. torch's thread count, which
    a run sets from its allocation, is put back afterwards."""
    import contextlib
    import io
    import warnings

    main = cli_main(command)
    out, err = io.StringIO(), io.StringIO()
    saved = {key: os.environ.get(key) for key in env or {}}
    threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    cwd = os.getcwd()
    os.environ.update(env or {})
    os.chdir(REPO)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=hidden)  # what an interpreter hides by default
            try:
                code = main(list(args))
            except SystemExit as exited:
                code = exited.code
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if threads is not None:
            sys.modules["torch"].set_num_threads(threads)
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1
        err.write(f"{code}\n")
        code = 1
    stderr = err.getvalue() + "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
                                      for w in caught)
    return Completed([command, *args], code or 0, out.getvalue(), stderr)


def run_here(*args: str, env: dict | None = None) -> Completed:
    """:func:`run_cli` in this process (``python -m replicate.run ARGS --no-progress``)."""
    return call_cli("run", *args, "--no-progress", env=env)


def one_clean_line(stderr: str) -> bool:
    """stderr is a single line and no traceback: how every refusal must look."""
    return stderr.count("\n") == 1 and stderr.endswith("\n") and "Traceback" not in stderr


def slurm_run(*args: str, cluster_config: str = "local", timeout: int = 900) -> subprocess.CompletedProcess:
    """``run_cli`` on the local SLURM cluster, under one of its cluster configs."""
    return run_cli(*args, "--cluster", "slurm", "--cluster-config", cluster_config, timeout=timeout)


TIMING_KEYS = ("epoch_time_s", "images_per_s", "wall_s")  # differ between identical runs


def only_run(results: Path, table: str) -> Path:
    """The single run folder of a table (hidden folders such as ``.slurm`` are bookkeeping)."""
    (run_dir,) = [p for p in (results / table).iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_dir


def run_metrics(run_dir: Path) -> list[dict]:
    """A run's metrics without the timings, which differ even between identical runs."""
    from replicate.atomic import read_jsonl

    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in read_jsonl(run_dir / "metrics.jsonl")]


def task_logs(record: dict) -> dict[int, str]:
    """Each task's output log of a submitted job: submitit names them ``<job id>_<task>_log.out``."""
    return {int(p.name.split("_")[-2]): p.read_text() for p in Path(record["folder"]).glob("*_log.out")}


def requeue_and_compare(spec_path: Path, results: Path, reference: Path, cluster_config: str) -> dict[int, str]:
    """Submit a spec, preempt its job once it logged an epoch (USR2, as SLURM before a time limit), wait.

    Checks that the requeued job resumed from its checkpoint and ended exactly like the uninterrupted run in
    ``reference``; returns each task's log for checks of the caller's own.
    """
    from replicate.backends.ledger import submissions_file
    from replicate.atomic import read_jsonl

    table = spec_path.stem
    submitted = slurm_run(str(spec_path), "--profile", "smoke", "--results", str(results),
                          cluster_config=cluster_config)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    (record,) = read_jsonl(submissions_file(results, table))
    _wait_for_first_metrics(results, table)
    signalled = subprocess.run(["scancel", "--signal=USR2", record["job_id"]], capture_output=True, text=True)
    assert signalled.returncode == 0, signalled.stderr
    waited = slurm_run(str(spec_path), "--profile", "smoke", "--results", str(results), "--wait",
                       cluster_config=cluster_config)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    logs = task_logs(record)
    assert logs and all("resuming" in text for text in logs.values()), "the job was not requeued from its checkpoint"
    run_dir, expected = only_run(results, table), only_run(reference, table)
    assert run_metrics(run_dir) == run_metrics(expected)
    ours, theirs = (json.loads((d / "result.json").read_text()) for d in (run_dir, expected))
    assert ours["selected"] == theirs["selected"] and ours["final"] == theirs["final"]
    return logs


def _wait_for_first_metrics(results: Path, table: str, timeout: float = 300) -> None:
    """Until some run of the table has logged an epoch, or ``timeout`` seconds (the caller's checks then fail)."""
    from replicate.atomic import read_jsonl

    deadline = time.time() + timeout
    while time.time() < deadline and not any(read_jsonl(p) for p in (results / table).glob("*/metrics.jsonl")):
        time.sleep(0.1)


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
