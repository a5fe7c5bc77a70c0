"""Issue 31: the device-side input pipeline in training runs (same numbers, same run ids as the workers')."""
import json

import pytest

from conftest import TIMING_KEYS, only_run, run_metrics
from replicate.run import main as run_main


def _train(spec_path, out, *extra):
    assert run_main([str(spec_path), "--profile", "smoke", "--results", str(out), "--rows", "plain",
                     "--device", "cpu", "--no-progress", *extra]) == 0
    return only_run(out, "tiny")


def _untimed(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def test_a_run_trains_alike_with_either_loader_under_one_run_id(tiny_spec, tmp_path):
    device = _train(tiny_spec, tmp_path / "device", "--loader", "device")
    workers = _train(tiny_spec, tmp_path / "workers", "--loader", "workers")
    default = _train(tiny_spec, tmp_path / "default")
    assert device.name == workers.name == default.name   # the loader is no part of the run id
    assert _untimed(run_metrics(device)) == _untimed(run_metrics(workers)) == _untimed(run_metrics(default))
    loaders = [json.loads((d / "result.json").read_text())["execution"]["loader"] for d in (device, workers, default)]
    assert loaders == ["device", "workers", "device"]   # recorded; auto is the device pipeline for in-memory data


def test_an_unknown_loader_is_a_usage_error(tiny_spec, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        run_main([str(tiny_spec), "--loader", "gpu", "--results", str(tmp_path)])
    assert info.value.code == 2 and "--loader" in capsys.readouterr().err


# -- measured cost estimates ----------------------------------------------------------------------------------
def test_a_finished_runs_figure_prices_its_row_and_the_others_say_what_they_assume(tiny_spec, tmp_path, monkeypatch,
                                                                                     capsys):
    from replicate import calibration
    from replicate.bench.__main__ import main as bench_main

    run_dir = _train(tiny_spec, tmp_path / "results")
    path = tmp_path / "calibration.json"
    monkeypatch.setenv(calibration.CALIBRATION_ENV, str(path))
    assert bench_main(["--calibrate", "--from-results", str(tmp_path / "results")]) == 0
    (figure,) = calibration.load(path)
    device = json.loads((run_dir / "result.json").read_text())["execution"]["device"]
    assert (figure.source, figure.device, figure.precision) == (f"run {run_dir.name}", device, "fp32")
    assert figure.seconds_per_image > 0 and figure.eval_seconds_per_image > 0
    capsys.readouterr()

    def plan(*extra):
        assert run_main([str(tiny_spec), "--profile", "smoke", "--dry-run", "--device", "cpu", "--format", "json",
                         "--results", str(tmp_path / "results"), *extra]) == 0
        return {r["row"]: r for r in json.loads(capsys.readouterr().out)["runs"]}

    rows = plan()
    assert rows["plain"]["gpu_hours_basis"] == f"measured on {device}"
    assert rows["base"]["gpu_hours_basis"] == "assumed 10 TFLOP/s"   # no figure of its network: fp32's assumption
    assert {r["gpu_hours_basis"] for r in plan("--precision", "bf16").values()} == {"assumed 20 TFLOP/s"}
    assert {r["gpu_hours_basis"] for r in plan("--gpu-tflops", "3").values()} >= {"assumed 3 TFLOP/s"}
    assert run_main([str(tiny_spec), "--profile", "smoke", "--dry-run", "--device", "cpu",
                     "--results", str(tmp_path / "results")]) == 0
    text = capsys.readouterr().out
    assert f"measured on {device}" in text and f"1 run(s) measured on {device}; 1 assumed" in text


def test_the_cluster_profiles_gpu_kind_selects_the_figures(tiny_spec, tmp_path, monkeypatch, capsys):
    from replicate import calibration

    path = tmp_path / "calibration.json"
    monkeypatch.setenv(calibration.CALIBRATION_ENV, str(path))
    calibration.record([calibration.Figure("ResNet20", "cifar10", "NVIDIA H100 80GB HBM3", "fp32", 2e-5, 1e-5, 128)])
    profile = tmp_path / "lab.yaml"
    common = [str(tiny_spec), "--profile", "smoke", "--dry-run", "--format", "json", "--cluster", "slurm",
              "--cluster-config", str(profile), "--results", str(tmp_path / "results"), "--rows", "plain"]
    for kind, basis in (("h100", "measured on NVIDIA H100 80GB HBM3"), ("A100", "assumed 10 TFLOP/s")):
        profile.write_text(f"gpu_kind: {kind}\ngpus_per_node: 4\n")
        assert run_main(common) == 0
        (row,) = json.loads(capsys.readouterr().out)["runs"]
        assert row["gpu_hours_basis"] == basis
    profile.write_text("gpu_kind: 100\n")
    assert run_main(common) == 2
    assert "'gpu_kind' must be the GPUs' name or a part of it" in capsys.readouterr().err


def test_a_measured_cost_is_epochs_times_training_images_plus_every_evaluated_image():
    from replicate import calibration, plan, spec

    (run,) = plan.expand(spec.load("ablation"), "/nonexistent", "mini", 1, "c10-single")
    figure = calibration.Figure("ResNet20-S16U1", "cifar10", "cpu (x86_64, 1 threads)", "fp32", 0.01, 0.002)
    cost = run.cost([figure], "cpu (x86_64, 1 threads)")
    # mini: 6 epochs of 5 000 training images; 2 000 validation images per epoch, the 10 000 test images once
    assert cost.hours * 3600 == pytest.approx(6 * 5000 * 0.01 + (6 * 2000 + 10_000) * 0.002)
    assert cost.basis == "measured on cpu (x86_64, 1 threads)"
    assert run.cost([figure], "cuda").basis == "assumed 10 TFLOP/s"
