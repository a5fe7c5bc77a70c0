"""The GPU cluster path rehearsed on the local SLURM: GPU requests, multi-task DDP jobs, requeue, a dying rank.

Needs the test cluster started with advertised GPUs (no real ones: training falls back to CPUs and gloo):

    SLURM_LOCAL_GPUS=4 SLURM_LOCAL_CPUS=4 bash slurm/start-local.sh && source /tmp/replicate-slurm/env.sh
    python -m pytest -q tests/test_slurm_gpu.py

What it cannot show: NCCL, real device placement, throughput.
"""
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import conftest
from conftest import (put_on_path, require_slurm_cluster, requeue_and_compare, run_command, run_metrics,
                      skip_or_fail, task_logs)
from replicate import plan, spec
from replicate.backends.ledger import submissions_file
from replicate.backends.slurm_cluster import job_parameters, load_cluster_config
from replicate.atomic import read_jsonl

pytestmark = pytest.mark.slurm
GPUS = 4
CLUSTER_CONFIG = "local-gpu"  # the cluster config that asks for GPUs
slurm_run = functools.partial(conftest.slurm_run, cluster_config=CLUSTER_CONFIG)


@pytest.fixture(scope="module")
def gpu_cluster() -> None:
    require_slurm_cluster()
    shown = run_command("sinfo", "-h", "-o", "%G %c").stdout
    gpus = max((int(n) for n in re.findall(r"gpu:(\d+)", shown)), default=0)
    cpus = max((int(n) for n in re.findall(r" (\d+)$", shown, re.M)), default=0)
    if gpus < GPUS or cpus < GPUS:
        skip_or_fail(f"the local SLURM cluster offers gpu:{gpus} and {cpus} CPUs; start it with "
                     f"SLURM_LOCAL_GPUS={GPUS} SLURM_LOCAL_CPUS={GPUS} bash slurm/start-local.sh")


def test_every_shipped_tables_jobs_are_accepted_by_the_controller(gpu_cluster, tmp_path, monkeypatch):
    """sbatch --test-only on the scripts submitit writes: CIFAR runs one GPU, ImageNet runs 4 tasks of 1 GPU."""
    import submitit

    real = shutil.which("sbatch")
    log = tmp_path / "accepted.log"
    put_on_path(monkeypatch, tmp_path / "bin", {
        "sbatch": f'out=$({real} --test-only "$@" 2>&1) || {{ echo "$out" >&2; exit 1; }}\n'
                  f'cat "$1" >> {log}\necho "$out" >> {log}\necho "Submitted batch job 1"'})
    profile = load_cluster_config(CLUSTER_CONFIG)
    checked = {}
    for name in spec.available():
        for run in plan.expand(spec.load(name), tmp_path / "results", "full", seeds=1):
            recipe = run.config.recipe
            if recipe.name in checked:
                continue
            log.write_text("")
            executor = submitit.AutoExecutor(folder=tmp_path / "submitit" / recipe.name, cluster="slurm")
            executor.update_parameters(**job_parameters(profile, recipe, name))
            executor.submit(int, 0)  # raises if the controller refuses the script
            checked[recipe.name] = log.read_text()
    assert set(checked) == {"cifar10", "cifar100", "imagenet-resnet", "imagenet-mobilenet",  # every recipe
                            "imagenet-resnet-2021", "imagenet-resnet50-shared-2021", "imagenet-mobilenet-2021"}
    for recipe, text in checked.items():
        gpus = 4 if recipe.startswith("imagenet") else 1
        assert f"#SBATCH --gpus-per-node={gpus}" in text and f"#SBATCH --ntasks-per-node={gpus}" in text
        assert "to start at" in text  # sbatch --test-only: the controller would schedule it
        assert ("--kill-on-bad-exit=1" in text) == (gpus > 1)


def _submission(results: Path, table: str) -> dict:
    return read_jsonl(submissions_file(results, table))[-1]


def test_an_imagenet_smoke_row_trains_as_one_job_of_four_ddp_tasks(gpu_cluster, tmp_path):
    results = tmp_path / "results"
    first = slurm_run("table3", "--profile", "smoke", "--rows", "mobilenetv2", "--results", str(results),
                      "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    (result_file,) = (results / "table3").glob("*/result.json")
    execution = json.loads(result_file.read_text())["execution"]
    assert execution["world_size"] == GPUS and execution["bn_batch"] == 64 // GPUS and execution["threads"] == 1
    logs = task_logs(_submission(results, "table3"))
    assert sorted(logs) == list(range(GPUS))  # every task's log is kept
    assert all("epoch   2/2" in text for text in logs.values())  # every rank trained both epochs
    again = slurm_run("table3", "--profile", "smoke", "--rows", "mobilenetv2", "--results", str(results))
    assert again.returncode == 0 and "nothing to run" in again.stdout and "submitted" not in again.stdout


REQUEUE_SPEC = """\
title: requeue of a multi-task job
dataset: imagenet
recipe: imagenet-resnet
rows: [{id: r, model: ResNet18}]
"""


@pytest.mark.slow  # two 4-task runs, about 2 minutes: CI runs it after the default suite
def test_a_requeued_multi_task_job_resumes_on_every_rank_and_matches_an_uninterrupted_one(gpu_cluster, tmp_path):
    spec_path = tmp_path / "requeue.yaml"
    spec_path.write_text(REQUEUE_SPEC)
    reference, results = tmp_path / "reference", tmp_path / "results"
    done = slurm_run(str(spec_path), "--profile", "smoke", "--results", str(reference), "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    logs = requeue_and_compare(spec_path, results, reference, CLUSTER_CONFIG)
    assert sorted(logs) == list(range(GPUS))  # every rank resumed (checked by the helper)


def _task_pid(job_id: str, task: int) -> int | None:
    """The process of one task of a job on this (the only) node: srun sets SLURM_JOB_ID and SLURM_PROCID."""
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = dict(item.split("=", 1) for item in environ.read_text().split("\0") if "=" in item)
            command = (environ.parent / "cmdline").read_text()
        except OSError:
            continue
        if variables.get("SLURM_JOB_ID") == job_id and variables.get("SLURM_PROCID") == str(task) \
                and "submitit.core._submit" in command:
            return int(environ.parent.name)
    return None


def test_a_rank_that_dies_fails_the_job_with_that_ranks_error(gpu_cluster, tmp_path):
    spec_path = tmp_path / "dies.yaml"
    spec_path.write_text(REQUEUE_SPEC.replace("requeue of", "a dying rank in"))
    results = tmp_path / "results"
    assert slurm_run(str(spec_path), "--profile", "smoke", "--results", str(results)).returncode == 0
    job_id = _submission(results, "dies")["job_id"]
    deadline, pid = time.time() + 300, None
    while time.time() < deadline and not (list((results / "dies").glob("*/config.json"))
                                          and (pid := _task_pid(job_id, 1))):
        time.sleep(0.2)
    assert pid, "the job never started training"
    os.kill(pid, signal.SIGKILL)  # as the out-of-memory killer would
    killed = time.time()
    while True:  # (a relaunch would resubmit the failed run: watch it with status instead)
        status = subprocess.run([sys.executable, "-m", "replicate.status", str(spec_path), "--profile", "smoke",
                                 "--results", str(results)], capture_output=True, text=True, timeout=120)
        if " failed " in status.stdout or time.time() - killed > 180:  # failed, not hung until the time limit
            break
        time.sleep(2)
    assert status.returncode == 1 and " failed " in status.stdout, status.stdout
    assert "task 1: Killed" in status.stdout, status.stdout


# -- --pack N: several single-GPU runs in one job on one GPU ---------------------------------------------------
PACK_SPEC = """\
title: packed runs
dataset: cifar10
recipe: cifar10
rows:
  - {id: a, model: ResNet20-S4U1}
  - {id: b, model: ResNet20}
  - {id: c, model: ResNet20-S4U1*}
"""


def _pack_records(results: Path, table: str) -> list[dict]:
    return read_jsonl(submissions_file(results, table))


def _wait_until_every_run_logged_an_epoch(run_dirs: list[Path], timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not all(read_jsonl(d / "metrics.jsonl") for d in run_dirs):
        time.sleep(0.2)


@pytest.mark.slow  # six runs and a requeue, about 3 minutes on 2 cores: CI runs it after the default suite
def test_packed_runs_equal_unpacked_ones_resume_together_after_a_requeue_and_relaunch_to_nothing(gpu_cluster,
                                                                                                 tmp_path):
    spec_path = tmp_path / "packs.yaml"
    spec_path.write_text(PACK_SPEC)
    unpacked, packed = tmp_path / "unpacked", tmp_path / "packed"
    common = (str(spec_path), "--profile", "smoke", "--set", "epochs=5")  # epochs long enough to interrupt
    alone = slurm_run(*common, "--results", str(unpacked), "--wait")
    assert alone.returncode == 0, alone.stdout + alone.stderr
    submitted = slurm_run(*common, "--results", str(packed), "--pack", "2")
    assert submitted.returncode == 0 and "packed up to 2 per job" in submitted.stdout, submitted.stderr
    records = _pack_records(packed, "packs")
    assert [r["slot"] for r in records] == [0, 1, 0] and records[0]["job_id"] == records[1]["job_id"]
    first = [packed / "packs" / r["run_id"] for r in records[:2]]
    _wait_until_every_run_logged_an_epoch(first)
    signalled = subprocess.run(["scancel", "--signal=USR2", records[0]["job_id"]], capture_output=True, text=True)
    assert signalled.returncode == 0, signalled.stderr
    waited = slurm_run(*common, "--results", str(packed), "--pack", "2", "--wait")
    assert waited.returncode == 0 and "submitted" not in waited.stdout, waited.stdout + waited.stderr
    for record in records[:2]:  # both runs of the requeued pack resumed from their checkpoints
        out = (Path(record["folder"]) / f"{record['job_id']}_pack{record['slot']}.out").read_text()
        assert f"resuming {record['run_id']} after epoch" in out, out
    for record in records:  # to the last digit: every epoch's metrics and the scores
        ours, theirs = packed / "packs" / record["run_id"], unpacked / "packs" / record["run_id"]
        assert run_metrics(ours) == run_metrics(theirs)
        mine, reference = (json.loads((d / "result.json").read_text()) for d in (ours, theirs))
        assert mine["selected"] == reference["selected"] and mine["final"] == reference["final"]
        assert mine["best"] == reference["best"] and mine["execution"]["threads"] == 1
    again = slurm_run(*common, "--results", str(packed), "--pack", "2")
    assert again.returncode == 0 and "nothing to run" in again.stdout and "submitted" not in again.stdout
    assert len(_pack_records(packed, "packs")) == 3  # nothing more was submitted


def test_a_packed_run_that_fails_fails_alone(gpu_cluster, tmp_path):
    spec_path = tmp_path / "packfail.yaml"
    spec_path.write_text("title: a failing run in a pack\ndataset: cifar10\nrecipe: cifar10\nrows:\n"
                         "  - {id: fine, model: ResNet20-S4U1}\n"
                         "  - {id: boom, model: ResNet20-S4U1, lambda_r: 1.0e+300}\n")
    results = tmp_path / "results"
    waited = slurm_run(str(spec_path), "--profile", "smoke", "--results", str(results), "--pack", "2", "--wait")
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert "1 done, 1 failed of 2 runs" in waited.stdout and "loss became inf" in waited.stderr
    report = subprocess.run([sys.executable, "-m", "replicate.status", str(spec_path), "--profile", "smoke",
                             "--results", str(results)], capture_output=True, text=True, timeout=120)
    assert report.returncode == 1
    lines = report.stdout.splitlines()
    fine = next(line for line in lines if line.startswith("fine "))
    boom = next(line for line in lines if line.startswith("boom "))
    assert " done " in fine and " failed " in boom
    assert "FloatingPointError: loss became inf" in boom and "_pack1.err" in boom
    assert "1 done, 1 failed (2 runs)" in lines
