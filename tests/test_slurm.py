"""SLURM execution: sbatch options from profiles (no cluster), and the real local cluster (marker ``slurm``)."""
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import put_on_path, requeue_and_compare, run_cli, slurm_run
from replicate.config import RECIPES
from replicate.backends import BACKENDS, LaunchOptions
from replicate.backends.slurm import SlurmConfig
from replicate.backends.slurm_cluster import SlurmError, _expand_array_id, job_parameters, load_cluster_config
from replicate.atomic import read_jsonl


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
    profile = load_cluster_config("default")
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
    params = job_parameters(load_cluster_config(str(profile_file)), RECIPES["imagenet-resnet"], "t")
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 2, 2)
    assert params["slurm_partition"] == "gpu" and params["slurm_account"] == "lab"
    assert params["slurm_qos"] == "high" and params["timeout_min"] == 60
    script = sbatch_script(load_cluster_config(str(profile_file)), RECIPES["imagenet-resnet"])
    assert "#SBATCH --exclude=node3" in script and "#SBATCH --nodes=2" in script
    profile_file.write_text("gpus_per_node: 3\n")  # 4 GPUs on nodes of 3: 2 nodes of 2, world size still 4
    params = job_parameters(load_cluster_config(str(profile_file)), RECIPES["imagenet-resnet"], "t")
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 2, 2)


def test_a_user_profile_is_layered_over_the_default_one(tmp_path):
    """A profile that sets only its partition still asks for the default's GPUs, CPUs and limits."""
    path = tmp_path / "mine.yaml"
    path.write_text("partition: gpu\n")
    mine, default = load_cluster_config(str(path)), load_cluster_config("default")
    assert mine.partition == "gpu" and mine.name == "mine"
    assert (mine.gpus_per_node, mine.cpus_per_task, mine.max_requeues, mine.time_min) == (
        default.gpus_per_node, default.cpus_per_task, default.max_requeues, default.time_min) == (
        8, 8, 10, default.time_min)
    assert job_parameters(mine, RECIPES["cifar10"], "t")["gpus_per_node"] == 1


def test_cpu_cluster_profile_asks_for_no_gpu():
    params = job_parameters(load_cluster_config("local"), RECIPES["imagenet-resnet"], "t")
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
        load_cluster_config(str(path))
    with pytest.raises(SlurmError, match="unknown cluster config 'nope'.*default, local"):
        load_cluster_config("nope")


def _fake_slurm(tmp_path, monkeypatch, sbatch: str, sacct: str = "exit 0") -> None:
    """sbatch, sinfo and sacct on PATH as small scripts (a cluster's answers without a cluster)."""
    put_on_path(monkeypatch, tmp_path / "fake-bin", {"sbatch": sbatch, "sinfo": "echo debug", "sacct": sacct})


def test_a_refused_array_never_hides_the_arrays_already_queued(tmp_path, monkeypatch):
    """Arrays are recorded one by one: when SLURM refuses the second, a relaunch knows the first is queued."""
    from replicate import plan, spec
    from replicate.backends.ledger import submissions_file

    once = tmp_path / "submitted-once"
    _fake_slurm(tmp_path, monkeypatch, f'if [ -f {once} ]; then echo "sbatch: error: invalid partition" >&2; exit 1; '
                                       f'fi\ntouch {once}\necho "Submitted batch job 7"')
    runs = plan.expand(spec.load("table3"), tmp_path / "r", "smoke")  # two recipes: two arrays
    options = LaunchOptions(results=tmp_path / "r", progress=False, config=SlurmConfig.named("local-gpu"))
    with pytest.raises(SlurmError, match="sbatch refused the jobs"):
        BACKENDS["slurm"].submit(runs, options)
    recorded = read_jsonl(submissions_file(tmp_path / "r", "table3"))
    assert [r["job_id"] for r in recorded] == ["7_0", "7_1"] and {r["row"] for r in recorded} == {
        "mobilenetv2", "mobilenetv2-shared"}


def test_sacct_that_fails_is_one_clear_line_not_a_run_left_queued(tmp_path, monkeypatch):
    from replicate.backends.slurm_cluster import job_states

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
    from replicate import plan, spec

    put_on_path(monkeypatch, tmp_path / "fake-bin", {"sinfo": f'echo "{sinfo}"', "sacct": "exit 0",
                                                       "sbatch": "echo should-not-run; exit 1"})
    runs = plan.expand(spec.load("table3"), tmp_path / "r", "smoke", rows="resnet34")
    options = LaunchOptions(results=tmp_path / "r", progress=False, config=SlurmConfig.named("default", "gpu", 4))
    with pytest.raises(SlurmError) as error:
        BACKENDS["slurm"].submit(runs, options)
    message = str(error.value)
    assert "partition 'gpu'" in message and fragment in message and "\n" not in message
    assert not (tmp_path / "r" / "table3" / ".slurm").exists()  # nothing submitted, nothing recorded


def test_a_partition_that_fits_passes_the_check():
    from replicate.backends.slurm_cluster import check_partition, Partition

    fits = Partition("gpu", time_min=None, gpus=8, cpus=64, mem_mb=512_000)  # unlimited time
    check_partition(fits, {"timeout_min": 4320, "gpus_per_node": 4, "tasks_per_node": 4, "cpus_per_task": 8,
                           "nodes": 1, "mem_gb": 200})


# -- --pack N: several single-GPU runs in one job (no cluster: fake sbatch/sacct) --------------------------------
def _packed_config(pack: int) -> SlurmConfig:
    return SlurmConfig.named("local-gpu", pack=pack)


def test_packing_groups_each_recipes_runs_into_tasks_of_n_with_their_share_of_the_cpus(tmp_path):
    from replicate import plan, spec
    from replicate.backends.slurm import arrays

    runs = plan.expand(spec.load("table1"), tmp_path, "smoke")  # 8 runs of one recipe
    (array,) = arrays(_packed_config(3), runs)
    assert [len(task) for task in array.tasks] == [3, 3, 2] and array.runs == runs
    assert array.threads == 1  # cpus_per_task 1 // 3, at least 1
    profile = replace(load_cluster_config("local-gpu"), cpus_per_task=8)
    assert arrays(SlurmConfig(profile, pack=3), runs)[0].threads == 2
    assert [len(task) for task in arrays(SlurmConfig(profile), runs)[0].tasks] == [1] * 8


def test_dry_run_json_shows_the_packed_jobs(tmp_path, capsys):
    from replicate.run import main

    assert main(["table1", "--profile", "smoke", "--cluster", "slurm", "--cluster-config", "local-gpu", "--pack",
                 "3", "--dry-run", "--format", "json", "--results", str(tmp_path)]) == 0
    plan = json.loads(capsys.readouterr().out)
    (job,) = plan["jobs"]
    assert (job["pack"], job["threads_per_run"], job["gpus_per_node"], job["tasks_per_node"]) == (3, 1, 1, 1)
    assert [len(task) for task in job["tasks"]] == [3, 3, 2]
    assert [run_id for task in job["tasks"] for run_id in task] == job["runs"] == [r["run_id"] for r in plan["runs"]]


@pytest.mark.parametrize("pack", ["0", "two", "-1"])
def test_a_pack_that_is_no_count_of_runs_is_a_usage_error(pack, tmp_path, capsys):
    from replicate.run import main

    with pytest.raises(SystemExit) as exit_:
        main(["table1", "--cluster", "slurm", "--pack", pack, "--dry-run", "--results", str(tmp_path)])
    assert exit_.value.code == 2 and "--pack" in capsys.readouterr().err


def test_packing_runs_whose_job_takes_several_gpus_is_refused_in_one_line(tmp_path, capsys):
    from replicate.run import main

    args = ["table3", "--profile", "smoke", "--cluster", "slurm", "--cluster-config", "local-gpu", "--dry-run",
            "--results", str(tmp_path)]
    assert main([*args, "--pack", "2"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: --pack 2 puts single-GPU runs together")
    assert "imagenet-mobilenet" in captured.err and "1 node(s) x 4 task(s) with 4 GPU(s)" in captured.err
    assert main([*args, "--pack", "2", "--gpus", "0"]) == 0  # CPU-only jobs of one task pack
    assert main([*args, "--pack", "1"]) == 0


def test_packed_runs_are_submitted_as_one_task_per_pack_and_recorded_each_with_its_slot(tmp_path, monkeypatch,
                                                                                         capsys):
    from replicate import plan, spec
    from replicate.backends.ledger import submissions_file
    from replicate.backends.pack import PackedJob

    _fake_slurm(tmp_path, monkeypatch, 'echo "Submitted batch job 9"')
    runs = plan.expand(spec.load("table1"), tmp_path / "r", "smoke", rows="resnet56*")  # 4 runs
    options = LaunchOptions(results=tmp_path / "r", progress=False, config=_packed_config(3))
    outcome = BACKENDS["slurm"].submit(runs, options)
    assert {o.state for o in outcome.values()} == {"submitted"} and len(outcome) == 4
    assert "packed up to 3 per job on one GPU with 1 CPU thread(s) per run" in capsys.readouterr().out
    records = read_jsonl(submissions_file(tmp_path / "r", "table1"))
    assert [(r["run_id"], r["job_id"], r["slot"], r["pack"], r["threads"], r["backend"]) for r in records] == [
        (run.run_id, f"9_{i // 3}", i % 3, 3, 1, "slurm") for i, run in enumerate(runs)]
    task = next(Path(records[0]["folder"]).glob("*_submitted.pkl"))
    import cloudpickle  # submitit's own pickle of the task: the pack of three runs' jobs, each with its threads

    delayed = cloudpickle.loads(task.read_bytes())
    assert isinstance(delayed.function, PackedJob)
    assert [job.run_dir for job in delayed.function.jobs] == [str(run.folder.path) for run in runs[:3]]
    assert {job.threads for job in delayed.function.jobs} == {1}


def test_a_packed_run_that_failed_shows_its_own_error_and_the_others_done(tmp_path, monkeypatch, capsys):
    """sacct says the pack's job FAILED; the run whose process failed shows the error of its own log, the run
    that finished shows done."""
    from conftest import write_run
    from replicate import plan, spec, status
    from replicate.backends.ledger import record
    from replicate.backends.pack import log_path

    runs = plan.expand(spec.load("table1"), tmp_path, "smoke", rows="resnet56,resnet56-s8u1")
    logs = tmp_path / "logs"
    logs.mkdir()
    record(tmp_path, "table1", "slurm", [{"run_id": run.run_id, "row": run.row.id, "seed": 0, "job_id": "5_0",
                                          "folder": str(logs), "pack": 2, "slot": slot, "threads": 1}
                                         for slot, run in enumerate(runs)])
    write_run(tmp_path, "table1", runs[0].row.id, 0, [8.0, 7.0], profile="smoke")
    log_path(logs, "5_0", 1).write_text("warning: something\nTraceback (most recent call last):\n  File x\n"
                                        "FloatingPointError: loss became inf at epoch 1, batch 0\n")
    log_path(logs, "5_0", 0).write_text("Traceback (most recent call last):\nValueError: not this run's\n")
    put_on_path(monkeypatch, tmp_path / "bin", {"sacct": 'echo "5_0|FAILED"', "squeue": "exit 0"})
    assert status.main(["table1", "--results", str(tmp_path), "--profile", "smoke", "--rows",
                        "resnet56,resnet56-s8u1"]) == 1
    lines = capsys.readouterr().out.splitlines()
    done = next(line for line in lines if line.startswith(f"{runs[0].row.id} "))
    failed = next(line for line in lines if line.startswith(f"{runs[1].row.id} "))
    assert " done " in done and " failed " in failed and "job 5_0" in failed
    assert "FAILED: " in failed and "FloatingPointError: loss became inf" in failed and "ValueError" not in failed
    assert str(log_path(logs, "5_0", 1)) in failed and "1 done, 1 failed (2 runs)" in lines
