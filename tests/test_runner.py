"""The training engine and the run CLI: results, resume after a real kill, idempotence, bad input."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from conftest import REPO, RESTART_SPEC, TINY_SPEC, one_clean_line, only_run, run_here, run_metrics
from replicate import plan, results, spec
from replicate.atomic import atomic_write_json, load_checkpoint, read_jsonl, save_checkpoint
from replicate.train import Trainer

def _result(run_dir: Path) -> dict:
    data = json.loads((run_dir / "result.json").read_text())
    return {k: data[k] for k in ("selected", "final", "best", "params", "macs", "config")}


def _trained(root: Path, text: str, name: str):
    """A spec's smoke runs trained once through the CLI: (spec file, results store, what the command said)."""
    spec_path = root / f"{name}.yaml"
    spec_path.write_text(text)
    completed = run_here(str(spec_path), "--profile", "smoke", "--results", str(root / "results"))
    assert completed.returncode == 0, completed.stderr
    return spec_path, root / "results", completed


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """The tiny spec's two smoke runs, trained once for the tests that check or start from them; a test that
    changes the store works on a copy (:func:`_copy`). Run ids do not depend on where the spec file is."""
    return _trained(tmp_path_factory.mktemp("tiny-store"), TINY_SPEC, "tiny")


@pytest.fixture(scope="module")
def restart_store(tmp_path_factory):
    """The restart spec's smoke run (paper protocol, gradient statistics), trained once (see tiny_store)."""
    return _trained(tmp_path_factory.mktemp("restart-store"), RESTART_SPEC, "restart")


def _copy(store: Path, tmp_path: Path) -> Path:
    """A copy of a trained store (file times kept) that a test may change."""
    return Path(shutil.copytree(store, tmp_path / "results"))


def test_smoke_table_runs_every_row_and_a_relaunch_runs_nothing(tiny_store, tmp_path):
    tiny_spec, trained, first = tiny_store
    out = _copy(trained, tmp_path)
    assert "2 done of 2 runs" in first.stdout
    frame = results.load(out, "tiny")
    assert sorted(frame.row) == ["base", "plain"] and frame.selected_top1_err.notna().all()
    assert set(frame.data) == {"synthetic"} and set(frame.profile) == {"smoke"}
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    second = run_here(str(tiny_spec), "--profile", "smoke", "--results", str(out))
    assert second.returncode == 0 and "nothing to run" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("result.json")} == stamps
    provenance = json.loads(next(out.rglob("provenance.json")).read_text())
    assert {"code", "packages", "host", "device", "command"} <= set(provenance)


def _start(spec_path: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "replicate.run", str(spec_path), "--profile", "smoke",
                             "--results", str(out), "--no-progress"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_killed_run_resumes_and_ends_exactly_like_an_uninterrupted_one(restart_spec, restart_store, tmp_path):
    reference, killed = restart_store[1], tmp_path / "killed"  # the uninterrupted run
    process = _start(restart_spec, killed)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        metrics = list(killed.rglob("metrics.jsonl"))
        if metrics and read_jsonl(metrics[0]) and list(killed.rglob("last.pt")):
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    run_dir = only_run(killed, "restart")
    assert not (run_dir / "result.json").exists()
    resumed = run_here(str(restart_spec), "--profile", "smoke", "--results", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    expected = only_run(reference, "restart")
    assert run_metrics(run_dir) == run_metrics(expected)
    assert _result(run_dir) == _result(expected)
    assert read_jsonl(run_dir / "gradstats.jsonl") == read_jsonl(expected / "gradstats.jsonl")


def _tiny_run(tmp_path, spec_path, protocol="paper"):
    table = spec.load(str(spec_path))
    return plan.expand(table, tmp_path / "results", "smoke", rows="shared", protocol=protocol)[0]


def test_clean_protocol_selects_on_validation_and_reports_test(restart_spec, tmp_path):
    run = _tiny_run(tmp_path, restart_spec, "clean")
    result = Trainer(run.config, run.folder, progress=False, log=lambda _: None).run()
    metrics = read_jsonl(run.folder.path / "metrics.jsonl")
    assert {m["eval_split"] for m in metrics} == {"val"}
    assert result.config.protocol == "clean" and result.best.split == "val"
    best_val_epoch = max(metrics, key=lambda m: m["eval_top1"])["epoch"]
    assert result.selected.epoch == best_val_epoch
    assert result.selected.val_top1_err == pytest.approx(100 - max(m["eval_top1"] for m in metrics))
    assert 0 <= result.selected.top1_err <= 100 and result.final.epoch == 2
    assert run.folder.result() == result  # what is stored reads back as what the engine reported


def test_paper_protocol_reports_the_best_test_epoch(restart_store):
    run_dir = only_run(restart_store[1], "restart")
    result = results.RunFolder(run_dir).result()
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert result.config.protocol == "paper" and result.best.split == "test"
    assert {m["eval_split"] for m in metrics} == {"test"}
    assert result.selected.top1_err == min(m["eval_top1_err"] for m in metrics)
    assert [m["lr"] for m in metrics] == [0.1, 0.01]  # the scaled CIFAR-100 schedule
    assert all(m["train_ortho"] > 0 for m in metrics)


def test_gradient_statistics_are_logged_per_shared_basis(restart_store):
    stats = read_jsonl(only_run(restart_store[1], "restart") / "gradstats.jsonl")
    assert {s["basis"] for s in stats} == {"stage1", "stage2", "stage3"}
    assert sorted({(s["epoch"], s["batch"]) for s in stats}) == [(1, 0), (1, 2), (2, 0), (2, 2)]
    assert all(0 < s["mean_abs"] <= s["max_abs"] <= s["l2"] for s in stats)


def test_atomic_json_write_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    atomic_write_json(target, {"old": 1})

    def broken_dumps(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(json, "dumps", broken_dumps)
    with pytest.raises(RuntimeError):
        atomic_write_json(target, {"new": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path):
    save_checkpoint(tmp_path, "last", {"epoch": 1, "w": torch.ones(2)})
    save_checkpoint(tmp_path, "last", {"epoch": 2, "w": torch.ones(2)})
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.warns(UserWarning, match="unreadable"):
        state = load_checkpoint(tmp_path, "last")
    assert state["epoch"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(tmp_path / "none", "last") is None


def test_checkpoints_refuse_arbitrary_pickles(tmp_path):
    torch.save({"evil": object()}, tmp_path / "last.pt")
    with pytest.warns(UserWarning):
        assert load_checkpoint(tmp_path, "last") is None  # weights_only=True rejects the object


@pytest.mark.parametrize("args,fragment", [
    (["table9"], "unknown table 'table9'"),
    (["table1", "--rows", "vgg*"], "matches no row"),
    (["table2", "--profile", "mini"], "CIFAR-10-style rows only"),
    (["table1", "--seeds", "0"], "--seeds must be at least 1"),
    ([], "name a table"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, fragment):
    out = tmp_path / "results"
    completed = run_here(*args, "--results", str(out))
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: ") and fragment in completed.stderr
    assert one_clean_line(completed.stderr)
    assert not out.exists()


def test_the_python_m_entry_point_passes_the_exit_status_and_the_line_to_the_shell(tmp_path):
    """The one refusal run as a user types it: ``sys.exit(main())`` gives the shell 2 and the clean line (the
    other refusals call ``main`` in this process)."""
    out = tmp_path / "results"
    completed = subprocess.run([sys.executable, "-m", "replicate.run", "table9", "--results", str(out)], cwd=REPO,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.startswith("error: unknown table 'table9'") and one_clean_line(completed.stderr)
    assert not out.exists()


def test_malformed_spec_and_impossible_model(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: t\nrows: [{id: x, model: ResNeXt50-S16U1, dataset: cifar100, recipe: cifar100}]\n")
    completed = run_here(str(bad), "--results", str(tmp_path / "r"))
    assert completed.returncode == 2 and "row 'x'" in completed.stderr and "group count 0" in completed.stderr
    assert one_clean_line(completed.stderr)


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tiny_spec, tmp_path):
    completed = run_here(str(tiny_spec), "--data-root", str(tmp_path / "nowhere"), "--results",
                        str(tmp_path / "r"), "--device", "cpu")
    assert completed.returncode == 2
    assert str(tmp_path / "nowhere") in completed.stderr and "--download" in completed.stderr
    assert one_clean_line(completed.stderr)
    assert not (tmp_path / "r").exists()


def test_unwritable_results_folder(tiny_spec, tmp_path):
    if os.geteuid() == 0:
        target = Path("/proc/replicate-results")  # root may write anywhere but procfs
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "results"
    completed = run_here(str(tiny_spec), "--profile", "smoke", "--results", str(target))
    assert completed.returncode == 2 and "not writable" in completed.stderr and one_clean_line(completed.stderr)


def test_dry_run_lists_every_run_with_its_cost_and_writes_nothing(tmp_path):
    out = tmp_path / "results"
    completed = run_here("table2", "--dry-run", "--results", str(out))
    assert completed.returncode == 0
    for row in spec.load("table2").rows:
        assert row.id in completed.stdout
    assert "gpu_hours" in completed.stdout and "estimated GPU-hours" in completed.stdout
    assert not out.exists()


def test_local_cluster_runs_through_submitit(tiny_spec, tmp_path):
    out = tmp_path / "results"
    completed = run_here(str(tiny_spec), "--profile", "smoke", "--cluster", "local", "--rows", "base",
                        "--results", str(out))
    assert completed.returncode == 0, completed.stderr
    assert len(list((out / "tiny").glob("*/result.json"))) == 1


def test_logs_are_reconciled_with_the_checkpoint_after_a_kill_at_any_instant(restart_store, tmp_path):
    spec_path, trained, _ = restart_store
    run = plan.expand(spec.load(str(spec_path)), _copy(trained, tmp_path), "smoke")[0]  # a finished run
    complete = {name: read_jsonl(run.folder.path / f"{name}.jsonl") for name in ("metrics", "gradstats")}
    # killed after the epoch-2 checkpoint but before its log lines were appended
    (run.folder.path / "result.json").unlink()
    for name, records in complete.items():
        (run.folder.path / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in records if r["epoch"] < 2) + '{"epoch": 2, "torn')
    Trainer(run.config, run.folder, progress=False, log=lambda _: None).run()
    for name, records in complete.items():
        assert read_jsonl(run.folder.path / f"{name}.jsonl") == records
    # killed after the logs were appended twice over (an epoch replayed without its checkpoint)
    (run.folder.path / "result.json").unlink()
    with open(run.folder.path / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({**complete["metrics"][-1], "epoch": 3}) + "\n")
    Trainer(run.config, run.folder, progress=False, log=lambda _: None).run()
    assert read_jsonl(run.folder.path / "metrics.jsonl") == complete["metrics"]


DDP_WORKER = """
import sys
from pathlib import Path
from replicate import plan, spec
from replicate.train import Trainer
table = spec.load(sys.argv[1])
run = plan.expand(table, Path(sys.argv[2]), "smoke", rows="base")[0]
Trainer(run.config, run.folder, progress=False, log=lambda _: None).run()
"""


@pytest.mark.slow
def test_two_process_data_parallel_training_writes_one_result(tiny_spec, tmp_path):
    """The DistributedDataParallel path (what SLURM multi-GPU jobs use), on CPU with the gloo backend."""
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517",
           "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-c", DDP_WORKER, str(tiny_spec), str(tmp_path / "r")],
                                cwd=REPO, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    errors = [w.communicate(timeout=600)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    (result,) = list((tmp_path / "r" / "tiny").glob("*/result.json"))
    metrics = read_jsonl(result.parent / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2]  # rank 0 alone writes
    assert metrics[0]["images_per_s"] > 0 and 0 <= json.loads(result.read_text())["selected"]["top1_err"] <= 100


def test_a_run_being_trained_elsewhere_is_not_trained_twice(restart_spec, tmp_path):
    from replicate.atomic import Busy, exclusive

    run = _tiny_run(tmp_path, restart_spec)
    with exclusive(run.folder.path):  # as another process training the same content-addressed run would
        with pytest.raises(Busy, match="another process"):
            Trainer(run.config, run.folder, progress=False, log=lambda _: None).run()
    assert not (run.folder.path / "metrics.jsonl").exists()


@pytest.mark.slow
def test_compiled_training_matches_eager_training(restart_spec, tmp_path, monkeypatch):
    """REPLICATE_COMPILE=1 runs the network under torch.compile; the run must compute the same thing."""
    eager = _tiny_run(tmp_path / "eager", restart_spec)
    Trainer(eager.config, eager.folder, progress=False, log=lambda _: None).run()
    monkeypatch.setenv("REPLICATE_COMPILE", "1")
    compiled = _tiny_run(tmp_path / "compiled", restart_spec)
    trainer = Trainer(compiled.config, compiled.folder, progress=False, log=lambda _: None)
    trainer.run()
    assert trainer.network is not trainer.model  # the compiled wrapper, weights on the plain model
    first = [read_jsonl(run.folder.path / "metrics.jsonl")[0] for run in (eager, compiled)]
    assert first[1]["train_loss"] == pytest.approx(first[0]["train_loss"], rel=1e-3)
    assert (compiled.folder.result_file).exists()


# -- what the suite refuses, and what it says (nothing silently mis-launched) --------------------------------
def test_a_full_profile_run_on_a_cpu_is_refused_first_unless_asked(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "results"
    completed = run_here("table1", "--rows", "resnet32", "--results", str(out), "--data-root", str(tmp_path / "none"))
    assert completed.returncode == 2 and one_clean_line(completed.stderr)  # before the data check
    assert "has none (device: cpu" in completed.stderr and "CPU-hours" in completed.stderr
    assert "--device cpu" in completed.stderr and not out.exists()
    asked = run_here("table1", "--rows", "resnet32", "--results", str(out), "--data-root", str(tmp_path / "none"),
                    "--device", "cpu")
    assert asked.returncode == 2 and "CIFAR-10" in asked.stderr  # past the device check: the data is missing
    assert one_clean_line(asked.stderr)


def test_asking_for_cuda_on_a_machine_without_it_is_refused(tiny_spec, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    completed = run_here(str(tiny_spec), "--profile", "smoke", "--device", "cuda", "--results", str(tmp_path / "r"))
    assert completed.returncode == 2 and "--device cuda: this machine has no CUDA device" in completed.stderr
    assert one_clean_line(completed.stderr)
    assert not (tmp_path / "r").exists()


def test_dry_run_as_json_is_exactly_the_plan(tmp_path):
    out = tmp_path / "results"
    completed = run_here("depth", "--dry-run", "--format", "json", "--results", str(out))
    assert completed.returncode == 0, completed.stderr
    plan = json.loads(completed.stdout)
    assert plan["table"] == "depth" and plan["profile"] == "full" and "jobs" not in plan
    keys = {"run_id", "row", "seed", "model", "dataset", "params", "macs", "epochs", "state", "precision"}
    assert all(keys <= set(run) for run in plan["runs"])
    assert {r["row"]: r["params"] for r in plan["runs"]} == {
        "depth-1": 609_530, "depth-2": 415_994, "depth-4": 319_226, "depth-all": 270_842}
    assert not out.exists()


def test_dry_run_as_json_shows_the_slurm_jobs_without_slurm(tmp_path):
    completed = run_here("table3", "--dry-run", "--format", "json", "--cluster", "slurm", "--results",
                        str(tmp_path / "r"), env={"PATH": "/usr/bin:/bin"})
    assert completed.returncode == 0, completed.stderr
    jobs = {job["recipe"]: job for job in json.loads(completed.stdout)["jobs"]}
    keys = {"runs", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "time_min", "partition"}
    assert all(keys <= set(job) for job in jobs.values())
    resnet = jobs["imagenet-resnet"]
    assert (resnet["nodes"], resnet["gpus_per_node"], resnet["tasks_per_node"], resnet["time_min"]) == (1, 4, 4, 2880)
    assert len(resnet["runs"]) == 4 and len(jobs["imagenet-mobilenet"]["runs"]) == 2


def test_a_gpu_recipe_on_a_cluster_profile_without_gpus_is_refused_unless_asked(tmp_path):
    args = ("table1", "--dry-run", "--cluster", "slurm", "--cluster-config", "local", "--results", str(tmp_path))
    refused = run_here(*args)
    assert refused.returncode == 2 and "offers none (gpus_per_node: 0)" in refused.stderr
    assert "--gpus 0" in refused.stderr and one_clean_line(refused.stderr)
    assert run_here(*args, "--gpus", "0").returncode == 0
    assert run_here(*args, "--profile", "smoke").returncode == 0  # synthetic smoke runs need no GPU


def test_imagenet_rows_warn_when_batchnorm_sees_another_batch_than_the_paper(tmp_path):
    completed = run_here("table3", "--dry-run", "--results", str(tmp_path))
    assert "BatchNorm sees 512 images per step, the paper's 128 (4 GPUs)" in completed.stderr
    on_slurm = run_here("table3", "--dry-run", "--cluster", "slurm", "--results", str(tmp_path))
    assert "BatchNorm" not in on_slurm.stderr  # the default cluster config gives each run 4 GPUs


def test_a_corrupt_result_is_reported_moved_aside_and_redone(tiny_store, tmp_path):
    """Without an intact final checkpoint (here: none) a corrupt result cannot be rebuilt: the run is redone."""
    tiny_spec, trained, _ = tiny_store
    out = _copy(trained, tmp_path)
    (run_dir,) = (out / "tiny").glob("resnet20-smoke-*")  # the plain row's run
    (run_dir / "result.json").write_text('{"run_id": "trunc')
    for checkpoint in (run_dir / "checkpoints").glob("last*.pt"):
        checkpoint.unlink()
    plan = run_here(str(tiny_spec), "--profile", "smoke", "--results", str(out), "--rows", "plain", "--dry-run")
    assert " corrupt " in plan.stdout and "1 corrupt" in plan.stdout
    again = run_here(str(tiny_spec), "--profile", "smoke", "--results", str(out), "--rows", "plain")
    assert again.returncode == 0, again.stderr
    assert "is unreadable; moved the run to" in again.stderr and "1 done of 1 runs" in again.stdout
    (aside,) = (out / "tiny" / ".aside").iterdir()
    assert (aside / "result.json").read_text() == '{"run_id": "trunc'
    assert json.loads((run_dir / "result.json").read_text())["run_id"] == run_dir.name


def test_every_run_records_its_device_and_thread_count(tiny_spec, tmp_path):
    """Threads: the CPUs the task was given (SLURM's allocation, else OMP_NUM_THREADS, else every CPU)."""
    out = tmp_path / "results"
    assert run_here(str(tiny_spec), "--profile", "smoke", "--results", str(out), "--rows", "plain",
                   env={"OMP_NUM_THREADS": "1"}).returncode == 0
    (result,) = results.load(out, "tiny").to_dict(orient="records")
    run_dir = out / "tiny" / result["run_id"]
    provenance = json.loads((run_dir / "provenance.json").read_text())
    stored = json.loads((run_dir / "result.json").read_text())
    assert provenance["threads"] == stored["execution"]["threads"] == 1
    assert stored["execution"]["world_size"] == 1 and stored["execution"]["bn_batch"] == 64
    assert stored["config"]["precision"] == "fp32"


def test_an_abbreviated_option_is_refused_not_guessed(capsys):
    """``--seed 2`` is not ``--seeds 2``: refused in one line, exit 2."""
    from replicate.run import main as run_main

    with pytest.raises(SystemExit) as exited:
        run_main(["table1", "--seed", "2", "--dry-run"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    assert err.splitlines() == [
        "python -m replicate.run: error: unrecognized arguments: --seed 2 (python -m replicate.run --help)"]


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "fast"])
def test_gpu_tflops_must_be_a_positive_number(value, capsys):
    """0 divided the cost estimate by zero and -3 gave negative hours: refused as a usage error, exit 2."""
    from replicate.run import main as run_main

    with pytest.raises(SystemExit) as exited:
        run_main(["table1", "--dry-run", "--gpu-tflops", value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert f"argument --gpu-tflops: {value!r} is not a number above 0" in line


def test_a_results_path_that_is_a_file_is_refused_before_anything_runs(tiny_spec, tmp_path, capsys):
    """--results naming a file, or a file where the table's folder goes: one line, exit 2, nothing written."""
    from replicate.run import main as run_main

    (tmp_path / "file").write_text("")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "tiny").write_text("")
    for results, culprit, extra in [(tmp_path / "file", tmp_path / "file", ["--dry-run"]),
                                    (tmp_path / "file", tmp_path / "file", []),
                                    (tmp_path / "store", tmp_path / "store" / "tiny", [])]:
        code = run_main([str(tiny_spec), "--profile", "smoke", "--device", "cpu", "--no-progress",
                         "--results", str(results), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {culprit} is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "store", "tiny.yaml"]
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["tiny"]


# -- overrides: --set KEY=VALUE (issue 28) -----------------------------------------------------------------------
def test_set_epochs_runs_as_a_custom_recipe_with_its_own_run_id(tiny_spec, tmp_path, capsys):
    """``--set epochs=1`` trains one epoch, as a setting of its own: own run id, labelled custom, never set
    beside the paper's numbers; the stored (committed) runs keep their ids."""
    from replicate import analysis
    from replicate.run import main as run_main

    out = tmp_path / "results"
    code = run_main([str(tiny_spec), "--profile", "smoke", "--rows", "plain", "--set", "epochs=1", "--results",
                     str(out), "--no-progress", "--device", "cpu"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "custom recipe (epochs=1)" in printed.out
    run_dir = only_run(out, "tiny")
    usual = plan.expand(spec.load(str(tiny_spec)), out, "smoke", rows="plain")[0]
    assert run_dir.name != usual.run_id and usual.state == "not started"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["overrides"] == {"epochs": 1} and config["recipe"]["epochs"] == 1
    assert [m["epoch"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [1]
    assert list(results.load(out, "tiny").overrides) == ["epochs=1"]
    (setting,) = [s for s in analysis.collect(spec.load(str(tiny_spec)), out).settings if s.overrides]
    assert "custom recipe (epochs=1)" in setting.label and setting.suffix == ".smoke-paper-custom-epochs1"
    (row,) = [r for r in analysis.collect(spec.load(str(tiny_spec)), out).settings[setting] if r.n]
    assert row.row.id == "plain" and not row.at_paper_scale and not row.comparable
    # the committed results are still found under their ids, and a plain relaunch does not see the custom run
    committed = plan.expand(spec.load("ablation"), REPO / "results", "mini", seeds=2)
    assert all(run.state == "done" for run in committed)


def test_a_custom_recipe_at_full_scale_is_never_compared_with_the_paper(tmp_path):
    from replicate import analysis
    from replicate.config import Setting

    row = next(r for r in spec.load("table1").rows if r.id == "resnet56-s16u1")
    paper = analysis.RowResult(row, Setting("full", "paper"), "cifar10", row.model, 0, 0)
    custom = analysis.RowResult(row, Setting("full", "paper", overrides=(("epochs", 10),)), "cifar10",
                                row.model, 0, 0)
    assert paper.at_paper_scale and paper.comparable
    assert not custom.at_paper_scale and not custom.comparable


@pytest.mark.parametrize("value,fragment", [
    ("nope=1", "unknown key 'nope'"), ("epochs=0", "epochs must be an integer >= 1"),
    ("epochs=1.5", "epochs must be an integer >= 1"), ("lr=-1", "lr must be a number > 0"),
    ("lr=nan", "lr must be a number > 0"), ("epochs", "KEY=VALUE"), ("validation=-1", "validation must be"),
])
def test_a_bad_override_is_one_usage_line_naming_the_key_and_the_valid_ones(value, fragment, capsys):
    from replicate.run import main as run_main

    with pytest.raises(SystemExit) as exited:
        run_main(["table1", "--dry-run", "--set", value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert line.startswith("python -m replicate.run: error: argument --set: ") and fragment in line
    assert "epochs, lr, batch_size, weight_decay" in line


def test_set_is_in_the_help_with_what_lr_means(capsys):
    from replicate.run import main as run_main

    with pytest.raises(SystemExit):
        run_main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--set KEY=VALUE" in help_text and "later phases scaled by the same factor" in help_text


# -- a corrupt result.json beside an intact final checkpoint is rebuilt, not retrained (issue 28) ---------------
@pytest.mark.parametrize("protocol", ["paper", "clean"])
def test_a_corrupt_result_with_an_intact_final_checkpoint_is_rebuilt_not_retrained(restart_spec, restart_store,
                                                                                 tmp_path, capsys, protocol):
    from replicate.run import main as run_main

    out = tmp_path / "results"
    args = [str(restart_spec), "--profile", "smoke", "--protocol", protocol, "--results", str(out), "--no-progress",
            "--device", "cpu"]
    if protocol == "paper":  # the smoke profile's own: the shared store has it
        _copy(restart_store[1], tmp_path)
    else:
        assert run_main(args) == 0
    run_dir = only_run(out, "restart")
    original = (run_dir / "result.json").read_bytes()
    untouched = {p: p.stat().st_mtime_ns for p in [run_dir / "metrics.jsonl", *run_dir.glob("checkpoints/*.pt")]}
    (run_dir / "result.json").write_bytes(original[: len(original) // 3])  # truncated
    capsys.readouterr()
    assert run_main(args) == 0
    printed = capsys.readouterr()
    assert "rebuilding it from its final checkpoint (epoch 2) and metrics.jsonl" in printed.err
    assert "epoch   1/" not in printed.out and "epoch   2/" not in printed.out  # nothing trained
    assert (run_dir / "result.json").read_bytes() == original  # what the uninterrupted run wrote, to the byte
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    (aside,) = (out / "restart" / ".aside").iterdir()  # the corrupt file is kept, never deleted
    assert aside.name.startswith(run_dir.name) and aside.read_bytes() == original[: len(original) // 3]
    assert only_run(out, "restart") == run_dir


def test_a_corrupt_result_with_incomplete_metrics_is_redone(restart_spec, restart_store, tmp_path, capsys):
    from replicate.run import main as run_main

    out = _copy(restart_store[1], tmp_path)
    args = [str(restart_spec), "--profile", "smoke", "--results", str(out), "--no-progress", "--device", "cpu"]
    run_dir = only_run(out, "restart")
    (run_dir / "result.json").write_text("{")
    metrics = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "metrics.jsonl").write_text(metrics[0])  # the final epoch's record is lost
    assert not results.RunFolder(run_dir).rebuildable()
    capsys.readouterr()
    assert run_main(args) == 0
    assert "moved the run to" in capsys.readouterr().err



def test_a_checkpoint_of_another_network_is_one_line(tiny_store, tmp_path, capsys):
    """A run folder holding another network's weights (copied from another run) is named with the fix, exit 2:
    not PyTorch's list of every missing key."""
    from replicate.run import main

    tiny_spec, trained, _ = tiny_store
    store = _copy(trained, tmp_path)
    args = [str(tiny_spec), "--profile", "smoke", "--results", str(store), "--no-progress"]
    (mine,) = (store / "tiny").glob("resnet20-smoke-*")
    (other,) = (store / "tiny").glob("resnet20-s4u1-smoke-*")
    shutil.copy(other / "checkpoints" / "last.pt", mine / "checkpoints" / "last.pt")
    (mine / "result.json").unlink()
    capsys.readouterr()
    assert main([*args, "--rows", "plain"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds the weights of another network than this run's ResNet20:" in err


def test_ctrl_c_under_cluster_local_is_one_clean_line(tmp_path):
    """Ctrl-C reaches the whole process group, submitit's controller included: ours is the only line printed."""
    process = subprocess.Popen([sys.executable, "-m", "replicate.run", "table1", "--profile", "smoke", "--cluster",
                                "local", "--results", str(tmp_path / "r"), "--no-progress"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=REPO)
    deadline = time.time() + 120
    while not list((tmp_path / "r").glob("table1/*/metrics.jsonl")) and time.time() < deadline:
        time.sleep(0.5)  # a local job is training
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted:")
