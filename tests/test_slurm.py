"""SLURM execution: sbatch options from profiles (no cluster), and the real local cluster (marker ``slurm``)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import put_on_path, requeue_and_compare, run_cli, slurm_run
from replicate.config import RECIPES
from replicate.slurm import SlurmError, _expand_array_id, job_parameters, load_profile
from replicate.store import read_jsonl


@pytest.fixture
def sbatch_script(tmp_path, monkeypatch):
    """The script submitit hands to ``sbatch`` for a profile and recipe, captured by a mocked ``sbatch``."""
    import submitit

    capture = tmp_path / "captured.sh"
    put_on_path(monkeypatch, tmp_path / "bin", {"sbatch": f'cp "$1" {capture}\necho "Submitted batch job 42"'})

    def script(profile, recipe) -> str:
        executor = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j", cluster="slurm")
        executor.update_parameters(**job_parameters(profile, recipe, "t"))
        executor.submit(int, 0)
        return capture.read_text()

    return script


def test_profile_becomes_sbatch_options(sbatch_script):
    profile = load_profile("default")
    imagenet = job_parameters(profile, RECIPES["imagenet-resnet"], "table3")
    assert (imagenet["tasks_per_node"], imagenet["gpus_per_node"], imagenet["nodes"]) == (4, 4, 1)
    assert imagenet["timeout_min"] == 2880 and imagenet["slurm_signal_delay_s"] == 180
    cifar = job_parameters(profile, RECIPES["cifar100"], "table2")
    assert (cifar["tasks_per_node"], cifar["gpus_per_node"], cifar["timeout_min"]) == (1, 1, 720)
    script = sbatch_script(profile, RECIPES["imagenet-resnet"])
    for line in ("#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4", "#SBATCH --signal=USR2@180",
                 "#SBATCH --time=2880", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB"):
        assert line in script


def test_small_nodes_spread_a_multi_gpu_run_over_several(tmp_path, sbatch_script):
    profile_file = tmp_path / "two.yaml"
    profile_file.write_text("partition: gpu\naccount: lab\nqos: high\ngpus_per_node: 2\n"
                            "extra_sbatch: {exclude: node3}\ntime_min: 60\n")
    params = job_parameters(load_profile(str(profile_file)), RECIPES["imagenet-resnet"], "t")
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 2, 2)
    assert params["slurm_partition"] == "gpu" and params["slurm_account"] == "lab"
    assert params["slurm_qos"] == "high" and params["timeout_min"] == 60
    script = sbatch_script(load_profile(str(profile_file)), RECIPES["imagenet-resnet"])
    assert "#SBATCH --exclude=node3" in script and "#SBATCH --nodes=2" in script
    profile_file.write_text("gpus_per_node: 3\n")  # 4 GPUs on nodes of 3: 2 nodes of 2, world size still 4
    params = job_parameters(load_profile(str(profile_file)), RECIPES["imagenet-resnet"], "t")
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 2, 2)


def test_a_user_profile_is_layered_over_the_default_one(tmp_path):
    """A profile that sets only its partition still asks for the default's GPUs, CPUs and limits."""
    path = tmp_path / "mine.yaml"
    path.write_text("partition: gpu\n")
    mine, default = load_profile(str(path)), load_profile("default")
    assert mine.partition == "gpu" and mine.name == "mine"
    assert (mine.gpus_per_node, mine.cpus_per_task, mine.max_requeues, mine.time_min) == (
        default.gpus_per_node, default.cpus_per_task, default.max_requeues, default.time_min) == (
        8, 8, 10, default.time_min)
    assert job_parameters(mine, RECIPES["cifar10"], "t")["gpus_per_node"] == 1


def test_cpu_cluster_profile_asks_for_no_gpu():
    params = job_parameters(load_profile("local"), RECIPES["imagenet-resnet"], "t")
    assert "gpus_per_node" not in params and params["tasks_per_node"] == 1 and params["nodes"] == 1


@pytest.mark.parametrize("text,fragment", [("partitoin: gpu\n", "unknown key 'partitoin'"),
                                           ("cpus_per_task: -1\n", "'cpus_per_task' must be"),
                                           ("setup: module load cuda\n", "'setup' must be a list of shell lines"),
                                           ("time_min: {default: 12h}\n", "'time_min' must be minutes > 0"),
                                           ("extra_sbatch: [exclusive]\n", "'extra_sbatch' must be a mapping"),
                                           ("mem_gb: lots\n", "'mem_gb' must be a number of GB")])
def test_bad_profiles_are_refused(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SlurmError, match=fragment):
        load_profile(str(path))
    with pytest.raises(SlurmError, match="unknown cluster profile 'nope'.*default, local"):
        load_profile("nope")


def _fake_slurm(tmp_path, monkeypatch, sbatch: str, sacct: str = "exit 0") -> None:
    """sbatch, sinfo and sacct on PATH as small scripts (a cluster's answers without a cluster)."""
    put_on_path(monkeypatch, tmp_path / "fake-bin", {"sbatch": sbatch, "sinfo": "echo debug", "sacct": sacct})


def test_a_refused_array_never_hides_the_arrays_already_queued(tmp_path, monkeypatch):
    """Arrays are recorded one by one: when SLURM refuses the second, a relaunch knows the first is queued."""
    from replicate import launch, plan, spec
    from replicate.slurm import submissions_file

    once = tmp_path / "submitted-once"
    _fake_slurm(tmp_path, monkeypatch, f'if [ -f {once} ]; then echo "sbatch: error: invalid partition" >&2; exit 1; '
                                       f'fi\ntouch {once}\necho "Submitted batch job 7"')
    runs = plan.expand(spec.load("table3"), tmp_path / "r", "smoke")  # two recipes: two arrays
    options = launch.LaunchOptions(results=tmp_path / "r", cluster_config="local-gpu", progress=False)
    with pytest.raises(SlurmError, match="sbatch refused the jobs"):
        launch.run_slurm(runs, options)
    recorded = read_jsonl(submissions_file(tmp_path / "r", "table3"))
    assert [r["job_id"] for r in recorded] == ["7_0", "7_1"] and {r["row"] for r in recorded} == {
        "mobilenetv2", "mobilenetv2-shared"}


def test_sacct_that_fails_is_one_clear_line_not_a_run_left_queued(tmp_path, monkeypatch):
    from replicate.slurm import job_states

    _fake_slurm(tmp_path, monkeypatch, "exit 1", sacct='echo "Slurm accounting storage is disabled" >&2; exit 1')
    with pytest.raises(SlurmError, match="sacct could not tell the jobs' states: Slurm accounting storage is disab"):
        job_states(["12"])


def test_pending_arrays_are_expanded_to_their_tasks():
    assert _expand_array_id("12_[0-3,7%2]") == ["12_0", "12_1", "12_2", "12_3", "12_7"]
    assert _expand_array_id("12_5") == ["12_5"]


@pytest.mark.parametrize("sinfo,fragment", [
    ('echo "slurm_load_partitions: Unable to contact slurm controller (connect failure)" >&2; exit 1',
     "SLURM is not reachable: slurm_load_partitions: Unable to contact slurm controller"),
    (None, "SLURM is not reachable: sbatch/sinfo/sacct are not on PATH"),
])
def test_unreachable_slurm_is_one_clear_line(tiny_spec, tmp_path, monkeypatch, sinfo, fragment):
    """A controller that does not answer (a fake sinfo says so at once, where a real one with a wrong SLURM_CONF
    waits out its 15 s), or no SLURM client at all: one line, exit 2, nothing written."""
    from conftest import one_clean_line, run_here

    if sinfo is None:
        monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    else:
        _fake_slurm(tmp_path, monkeypatch, "exit 1")
        put_on_path(monkeypatch, tmp_path / "fake-bin", {"sinfo": sinfo})
    completed = run_here(str(tiny_spec), "--profile", "smoke", "--cluster", "slurm", "--results", str(tmp_path / "r"))
    assert completed.returncode == 2 and completed.stderr.startswith(f"error: {fragment}")
    assert one_clean_line(completed.stderr) and not (tmp_path / "r").exists()


# -- on the real local cluster ------------------------------------------------------------------------------
def status(table: str, results: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "replicate.status", table, "--profile", "smoke", "--results",
                           str(results), *extra], capture_output=True, text=True, timeout=120)


@pytest.mark.slurm
def test_table1_smoke_as_a_job_array_then_relaunches_submit_only_what_is_missing(slurm_cluster, tmp_path):
    results = tmp_path / "results"
    first = slurm_run("table1", "--profile", "smoke", "--results", str(results), "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "submitted 8 run(s)" in first.stdout
    done = sorted((results / "table1").glob("*/result.json"))
    assert len(done) == 8
    again = slurm_run("table1", "--profile", "smoke", "--results", str(results))
    assert again.returncode == 0 and "nothing to run" in again.stdout and "submitted" not in again.stdout
    shutil.rmtree(done[0].parent)  # as if that array task had been lost
    partial = slurm_run("table1", "--profile", "smoke", "--results", str(results), "--wait")
    assert partial.returncode == 0 and "submitted 1 run(s)" in partial.stdout
    assert len(list((results / "table1").glob("*/result.json"))) == 8
    report = status("table1", results)
    assert report.returncode == 0 and "8 done" in report.stdout


@pytest.mark.slurm
def test_a_job_that_fails_on_the_node_shows_as_failed_with_its_error(slurm_cluster, tmp_path):
    spec_path = tmp_path / "diverge.yaml"
    spec_path.write_text("title: diverging\ndataset: cifar10\nrecipe: cifar10\n"
                         "rows: [{id: boom, model: ResNet20-S4U1, lambda_r: 1.0e+300}]\n")
    results = tmp_path / "results"
    submitted = slurm_run(str(spec_path), "--profile", "smoke", "--results", str(results), "--wait")
    assert submitted.returncode == 1
    assert "failed" in submitted.stderr and "loss became inf" in submitted.stderr
    report = status(str(spec_path), results)
    assert report.returncode == 1
    assert "failed" in report.stdout and "FloatingPointError: loss became inf" in report.stdout


@pytest.mark.slurm
def test_sbatch_rejection_is_one_clear_line(slurm_cluster, tiny_spec, tmp_path):
    completed = slurm_run(str(tiny_spec), "--profile", "smoke", "--partition", "nosuchpartition",
                          "--results", str(tmp_path / "r"))
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: sbatch refused the jobs:")
    assert "invalid partition" in completed.stderr.lower() and completed.stderr.count("\n") == 1
    assert not (tmp_path / "r" / "tiny" / ".slurm").exists()


@pytest.mark.slurm
def test_preempted_run_is_requeued_resumes_and_matches_an_uninterrupted_run(slurm_cluster, tmp_path):
    spec_path = tmp_path / "long.yaml"
    spec_path.write_text("title: requeue\ndataset: cifar10\nrecipe: cifar100\n"
                         "rows: [{id: r, model: ResNet56-S16U1}]\n")
    reference = tmp_path / "reference"  # same thread count as the 1-CPU job: same floating-point sums
    assert run_cli(str(spec_path), "--profile", "smoke", "--results", str(reference),
                   env={"OMP_NUM_THREADS": "1"}).returncode == 0
    requeue_and_compare(spec_path, tmp_path / "results", reference, cluster_config="local")


# -- the request against the partition, before anything is submitted (fake sinfo) ----------------------------
@pytest.mark.parametrize("sinfo,fragment", [
    ("1:00:00|gpu:4|16|64000", "time limit"),            # 1 h partition, the profile asks for more
    ("7-00:00:00|(null)|16|64000", "no GPUs"),           # a CPU partition for a GPU job
    ("7-00:00:00|gpu:a100:2(S:0-1)|16|64000", "2 GPUs per node"),  # ImageNet needs 4 on one node here
    ("7-00:00:00|gpu:4|2|64000", "CPUs per node"),
])
def test_a_request_the_partition_can_never_satisfy_is_refused_before_submitting(tmp_path, monkeypatch, sinfo,
                                                                                  fragment):
    from replicate import launch, plan, spec

    put_on_path(monkeypatch, tmp_path / "fake-bin", {"sinfo": f'echo "{sinfo}"', "sacct": "exit 0",
                                                       "sbatch": "echo should-not-run; exit 1"})
    runs = plan.expand(spec.load("table3"), tmp_path / "r", "smoke", rows="resnet34")
    options = launch.LaunchOptions(results=tmp_path / "r", cluster_config="default", progress=False,
                                   partition="gpu", gpus=4)
    with pytest.raises(SlurmError) as error:
        launch.run_slurm(runs, options)
    message = str(error.value)
    assert "partition 'gpu'" in message and fragment in message and "\n" not in message
    assert not (tmp_path / "r" / "table3" / ".slurm").exists()  # nothing submitted, nothing recorded


def test_a_partition_that_fits_passes_the_check():
    from replicate.slurm import check_partition, Partition

    fits = Partition("gpu", time_min=None, gpus=8, cpus=64, mem_mb=512_000)  # unlimited time
    check_partition(fits, {"timeout_min": 4320, "gpus_per_node": 4, "tasks_per_node": 4, "cpus_per_task": 8,
                           "nodes": 1, "mem_gb": 200})
