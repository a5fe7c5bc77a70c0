"""Checks of the local SLURM test cluster (slurm/start-local.sh).

Run them with a cluster up:

    bash slurm/start-local.sh && source /tmp/replicate-slurm/env.sh
    python -m pytest -q -m slurm tests/test_slurm_cluster.py

Without a reachable cluster (``SLURM_CONF`` unset, or ``sinfo`` failing) they are skipped.
"""

from __future__ import annotations

import os
import time

import pytest

from conftest import require_slurm_cluster, run_command as _run

_NODE_OK = {"idle", "mixed", "allocated"}


@pytest.fixture(scope="module", autouse=True)
def _require_slurm():
    # Module scope, so that it runs before (and skips) the module-scoped job fixture.
    require_slurm_cluster()


pytestmark = pytest.mark.slurm


def _sacct_state(job_id: str) -> str:
    proc = _run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State")
    assert proc.returncode == 0, f"sacct failed: {proc.stderr.strip()}"
    states = [s.strip() for s in proc.stdout.splitlines() if s.strip()]
    return states[0] if states else ""


@pytest.fixture(scope="module")
def finished_job(_require_slurm, tmp_path_factory):
    """One trivial submitit job, run to completion; yields (job, result)."""
    import submitit

    # A fresh folder: job ids restart at 1 on a fresh cluster, and an old folder would hand back
    # stale result pickles.
    folder = tmp_path_factory.mktemp("submitit")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(slurm_partition="debug", timeout_min=2, cpus_per_task=1,
                               name="replicate-slurm-test")
    # os.getenv is importable in the job (a function from this test module would not be); the
    # job returns its own SLURM_JOB_ID, which proves that it ran under SLURM.
    job = executor.submit(os.getenv, "SLURM_JOB_ID")
    deadline = time.monotonic() + 120
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"submitit job {job.job_id} not done after 120 s (state {job.state}); "
                        f"see {folder} and the logs under the cluster's state dir")
        time.sleep(0.5)
    yield job, job.result()


def test_node_is_usable():
    deadline = time.monotonic() + 15          # allow a previous job to finish COMPLETING
    while True:
        proc = _run("sinfo", "-h", "-N", "-o", "%N %T %P")
        assert proc.returncode == 0, proc.stderr
        rows = [line.split() for line in proc.stdout.splitlines() if line.strip()]
        assert rows, "sinfo lists no node"
        states = {row[1] for row in rows}
        if states & _NODE_OK:
            break
        assert time.monotonic() < deadline, f"no node idle/mixed/allocated: {proc.stdout}"
        time.sleep(0.5)
    partitions = {row[2] for row in rows}
    assert "debug*" in partitions, f"'debug' is not the default partition: {partitions}"


def test_submitit_job_returns_result(finished_job):
    job, result = finished_job
    assert result == str(job.job_id)
    # job.state is only refreshed now and then; force submitit's own sacct query instead.
    deadline = time.monotonic() + 15
    while (state := job.get_info(mode="force").get("State")) != "COMPLETED":
        assert time.monotonic() < deadline, f"submitit sees job {job.job_id} as {state!r}"
        time.sleep(0.5)


def test_sacct_knows_job(finished_job):
    job, _ = finished_job
    deadline = time.monotonic() + 15          # sacct may lag slurmctld by about a second
    state = _sacct_state(str(job.job_id))
    while state != "COMPLETED" and time.monotonic() < deadline:
        time.sleep(0.5)
        state = _sacct_state(str(job.job_id))
    assert state == "COMPLETED", f"sacct state of job {job.job_id}: {state!r}"
