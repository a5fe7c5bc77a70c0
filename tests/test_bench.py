"""The benchmark tool: what it measures, its output formats and its errors (timings are never asserted)."""
import json

import pytest

from replicate.bench.measure import Measurement, original_of, peak_memory_mb, plan_pairs, ratios, resolve_model
from conftest import call_cli, one_clean_line


def bench(*args: str):
    """``python -m replicate.bench ARGS``, called in this process."""
    return call_cli("bench", *args)


def test_models_resolve_to_their_paper_dataset_and_original():
    assert resolve_model("ResNet56-S16U1*").dataset == "cifar10"
    assert resolve_model("ResNet34-S32U1").dataset == "cifar100"
    assert resolve_model("ResNet34-S32U1@imagenet").dataset == "imagenet"
    assert original_of(resolve_model("ResNet56-S16U1*")).name == "ResNet56"


def test_each_shared_model_gets_its_original_once_and_originals_only_one_row():
    pairs = [(c.name, kind) for c, kind in plan_pairs(
        ["ResNet56", "ResNet56-S16U1", "ResNet56-S16U1*"], ["replicate", "reference", "original", "folded"])]
    assert pairs == [("ResNet56", "original")] + [
        (m, k) for m in ("ResNet56-S16U1", "ResNet56-S16U1*") for k in ("replicate", "reference", "folded")]


def test_json_rows_and_the_derived_ratios():
    proc = bench("--models", "ResNet20-S4U1", "--batch", "4", "--rounds", "2", "--min-time", "0.01", "--no-memory",
                 "--no-progress", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["model"], r["implementation"]) for r in rows] == [
        ("ResNet20", "original"), ("ResNet20-S4U1", "replicate"), ("ResNet20-S4U1", "reference"),
        ("ResNet20-S4U1", "folded")]
    for row in rows:
        assert {"model", "implementation", "train_step_ms", "infer_ms", "peak_mem_mb"} <= set(row)
        assert row["infer_ms"] > 0 and row["batch"] == 4 and row["measurements"] >= 1
    trained = {r["implementation"]: r for r in rows}
    assert trained["folded"]["train_step_ms"] is None and trained["replicate"]["train_step_ms"] > 0
    assert trained["replicate"]["ortho_ms"] > 0 and trained["original"]["ortho_ms"] is None
    assert len(trained["replicate"]["train_step_rounds_ms"]) == 2 and trained["folded"]["train_step_rounds_ms"] == []

    summary = ratios([Measurement(**r) for r in rows])
    assert len(summary) == 1 and summary[0]["model"] == "ResNet20-S4U1"
    assert summary[0]["train_vs_reference"] == pytest.approx(
        trained["replicate"]["train_step_ms"] / trained["reference"]["train_step_ms"], rel=1e-2)
    per_round = sorted(mine / theirs for mine, theirs in zip(trained["replicate"]["train_step_rounds_ms"],
                                                             trained["original"]["train_step_rounds_ms"]))
    assert summary[0]["train_vs_original_rounds"] == pytest.approx(per_round, rel=1e-2, abs=5e-4)  # 3 decimals


def test_round_ratios_pair_the_rounds_of_one_run():
    def row(model, kind, rounds):
        return Measurement(model, "cifar10", kind, "cpu", 8, 2, train_step_ms=sorted(rounds)[1],
                           train_step_rounds_ms=rounds)
    ours = row("ResNet20-S4U1", "replicate", [300.0, 120.0, 110.0])
    # the machine was slow in the first round for both: paired, that round's ratio is 1.2 all the same
    original = row("ResNet20", "original", [250.0, 100.0, 100.0])
    summary = ratios([original, ours])[0]
    assert summary["train_vs_original"] == pytest.approx(1.2)
    assert summary["train_vs_original_rounds"] == pytest.approx([1.1, 1.2])
    assert summary["train_vs_reference_rounds"] is None  # no reference row in this run
    unpaired = row("ResNet20", "original", [100.0, 100.0])  # another number of rounds: nothing to pair
    assert ratios([unpaired, ours])[0]["train_vs_original_rounds"] is None


def test_peak_memory_of_a_step_is_measured_in_a_fresh_process():
    config = resolve_model("ResNet20-S4U1")
    training = peak_memory_mb(config, "replicate", "cpu", 32, 1)
    inference = peak_memory_mb(config, "folded", "cpu", 32, 1)
    # Saved activations of a batch of 32 are tens of MB; eval-mode inference keeps none of them.
    assert 5 < training < 2000 and 0 <= inference < training


@pytest.mark.parametrize("args,message", [
    (["--models", "ResNet57-S16U1"], "not in the zoo"),
    (["--models", "ResNet56@svhn"], "unknown dataset"),
    (["--device", "cuda"], "no CUDA device"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    if args[0] == "--device":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is visible")
    proc = bench(*args, "--no-memory", "--rounds", "1")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and one_clean_line(proc.stderr)


def test_json_output_file_and_an_unwritable_one(tmp_path):
    out = tmp_path / "bench" / "rows.json"
    args = ("--models", "ResNet20-U1", "--implementations", "replicate", "--batch", "2", "--rounds", "1",
            "--min-time", "0.01", "--no-memory", "--no-progress")
    proc = bench(*args, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())
    assert row["implementation"] == "replicate" and row["torch_version"] and row["code_commit"]
    blocked = tmp_path / "file"
    blocked.write_text("")
    proc = bench(*args, "--output", str(blocked / "rows.json"))
    assert proc.returncode == 2 and "--output" in proc.stderr and one_clean_line(proc.stderr)


def test_basis_shapes_of_a_model_and_the_widths_timed():
    from replicate.bench.convs import BasisShape, basis_shapes, widths
    from replicate.models import DecomposedConv, create

    shapes = basis_shapes("ResNet56-S16U1*", "cifar10")
    assert set(shapes) == {BasisShape(16, 32, 3, 17, 16), BasisShape(32, 16, 3, 34, 32), BasisShape(64, 8, 3, 68, 64)}
    model = create("ResNet56-S16U1*", "cifar10")
    assert sum(shapes.values()) == sum(isinstance(m, DecomposedConv) for m in model.modules())
    assert widths(BasisShape(16, 32, 3, 17, 16), [8, 16, 17]) == {
        "rank": 17, "shared": 16, "padded8": 24, "padded16": 32}
    assert widths(BasisShape(64, 8, 3, 64, 64), [16]) == {"rank": 64}  # nothing unique, nothing to pad
    assert not basis_shapes("ResNet20", "cifar10")


def test_basis_convolutions_are_timed_per_shape_and_width():
    proc = bench("--basis-convs", "--models", "ResNet20-S4U1", "--pad", "8", "--batch", "2", "--rounds", "1",
                 "--min-time", "0.01", "--no-progress", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["input"], r["variant"], r["width"]) for r in rows] == [
        ("16x32x32", "rank", 5), ("16x32x32", "shared", 4), ("16x32x32", "padded8", 8),
        ("32x16x16", "rank", 10), ("32x16x16", "shared", 8), ("32x16x16", "padded8", 16),
        ("64x8x8", "rank", 20), ("64x8x8", "shared", 16), ("64x8x8", "padded8", 24)]
    for row in rows:
        assert min(row["forward_ms"], row["weight_grad_ms"], row["input_grad_ms"]) > 0
        assert row["total_ms"] == pytest.approx(row["forward_ms"] + row["weight_grad_ms"] + row["input_grad_ms"])
        assert row["per_step_ms"] == pytest.approx(row["total_ms"] * row["layers"]) and row["layers"] > 0
        assert row["transposed"]  # on CPU in channels_last the engine trains the transposed form; so it is timed


@pytest.mark.parametrize("args,message", [
    (["--basis-convs", "--models", "ResNet20"], "none of the models has a single-convolution filter basis"),
    (["--pad", "16"], "--pad"),
])
def test_basis_convs_bad_input_exits_2(args, message):
    proc = bench(*args, "--rounds", "1", "--min-time", "0.01", "--no-progress")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if "error:" in line] == [proc.stderr.splitlines()[-1]]


# -- issue 31: input pipelines, training throughput as the engine trains, calibration ------------------------
def test_cuda_throughput_without_cuda_is_one_line_exit_2(monkeypatch, capsys):
    import torch

    from replicate.bench.__main__ import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --device cuda: no CUDA device") and "Traceback" not in err


def test_loader_rows_give_images_per_second_per_core_of_both_pipelines(monkeypatch, capsys):
    import functools

    from replicate.bench import __main__ as bench_main
    from replicate.bench import loader

    monkeypatch.setattr(bench_main, "run_loader_benchmark",
                        functools.partial(loader.run_loader_benchmark, images=512, workers_images=128))
    assert bench_main.main(["--loader", "--rounds", "1", "--format", "json", "--no-progress"]) == 0
    rows = {r["loader"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"device", "workers"}
    for row in rows.values():
        assert row["threads"] == 1 and row["images_per_s"] > 0 and row["images_per_s_per_core"] == row["images_per_s"]
    assert rows["device"]["images"] == 512 and rows["workers"]["images"] == 128


def test_throughput_trains_from_the_device_pipeline_and_calibrate_records_it(tmp_path, capsys):
    from replicate import calibration
    from replicate.bench.__main__ import main

    args = ["--models", "ResNet20@cifar10", "--batch", "4", "--min-time", "0.05", "--no-progress", "--threads", "1"]
    assert main(["--throughput", *args, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["loader"], row["precision"], row["compiled"], row["batch"]) == ("device", "fp32", False, 4)
    assert row["train_images_per_s"] > 0 and row["seconds_per_image"] > 0
    path = tmp_path / "calibration.json"
    assert main(["--calibrate", *args, "--calibration", str(path)]) == 0
    assert f"recorded 1 figure(s) in {path}" in capsys.readouterr().out
    (figure,) = calibration.load(path)
    assert (figure.model, figure.dataset, figure.precision, figure.source) == ("ResNet20", "cifar10", "fp32", "bench")
    assert figure.device.startswith("cpu") and figure.seconds_per_image > 0 and figure.recorded
    assert calibration.find([figure], "ResNet20", "cifar10", "fp32", "CPU (x86") == figure   # a part, any case
    assert calibration.find([figure], "ResNet20", "cifar10", "bf16", figure.device) is None


def test_a_broken_calibration_file_is_one_line(tmp_path, capsys):
    from replicate.bench.__main__ import main

    path = tmp_path / "calibration.json"
    path.write_text("{not json")
    assert main(["--calibrate", "--from-results", str(tmp_path), "--calibration", str(path)]) == 2
    assert "no finished run" in capsys.readouterr().err
    assert main(["--from-results", str(tmp_path)]) == 2
    assert "--from-results goes with --calibrate" in capsys.readouterr().err
    from replicate import calibration
    from replicate.errors import UserError

    with pytest.raises(UserError, match=f"calibration file {path} is unreadable"):
        calibration.load(path)
