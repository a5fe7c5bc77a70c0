"""Issue 27: a bf16 run trains end to end on a CPU through the command real runs use (autocast in the Trainer)."""
import json
import math

from conftest import only_run, run_metrics
from replicate.run import main as run_main


def _train(spec_path, out, *extra):
    assert run_main([str(spec_path), "--profile", "smoke", "--rows", "plain", "--seeds", "1", "--results", str(out),
                     "--device", "cpu", "--no-progress", *extra]) == 0
    return only_run(out, "tiny")


def test_a_bf16_run_trains_on_cpu_records_its_precision_and_has_its_own_id(tiny_spec, tmp_path):
    bf16 = _train(tiny_spec, tmp_path / "bf16", "--precision", "bf16")
    fp32 = _train(tiny_spec, tmp_path / "fp32")
    result = json.loads((bf16 / "result.json").read_text())
    assert result["config"]["precision"] == "bf16" == json.loads((bf16 / "config.json").read_text())["precision"]
    assert bf16.name == result["run_id"] != fp32.name
    metrics = run_metrics(bf16)
    assert len(metrics) == 2 and all(math.isfinite(m["train_loss"]) and math.isfinite(m["eval_loss"]) for m in metrics)
    # autocast took effect: the same run in fp32 computes other numbers
    assert [m["train_loss"] for m in metrics] != [m["train_loss"] for m in run_metrics(fp32)]
