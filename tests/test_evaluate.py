"""``replicate.evaluate --checkpoint`` on the suite's own checkpoints: the model from the run's config.json (issue 28)."""
import json
import shutil

import pytest
import torch

from conftest import only_run
from replicate import evaluate
from replicate.atomic import read_jsonl


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny smoke run (paper protocol: every epoch evaluated on the test split), trained once."""
    from replicate.run import main as run_main

    root = tmp_path_factory.mktemp("evaluate")
    spec_path = root / "tiny.yaml"
    spec_path.write_text('title: "Tiny"\ndataset: cifar10\nrecipe: cifar10\nrows:\n'
                         '  - {id: base, model: ResNet20-S4U1, sharing_depth: 3}\n')
    assert run_main([str(spec_path), "--profile", "smoke", "--results", str(root / "results"), "--no-progress",
                     "--device", "cpu"]) == 0
    return only_run(root / "results", "tiny")


def _evaluated(capsys, path, *extra) -> dict:
    assert evaluate.main(["--checkpoint", str(path), "--batch-size", "64", "--format", "json", "--no-progress",
                          *extra]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_the_suites_best_and_last_checkpoints_evaluate_as_the_run_measured_them(trained, capsys):
    metrics = {m["epoch"]: m for m in read_jsonl(trained / "metrics.jsonl")}
    (best,) = (trained / "checkpoints").glob("best-*.pt")
    epoch = int(best.stem.split("-")[1])
    record = _evaluated(capsys, best)
    assert (record["model"], record["dataset"], record["data"]) == ("ResNet20-S4U1", "cifar10", "synthetic")
    assert record["run_id"] == trained.name and record["sharing_depth"] == 3
    assert record["stored_epoch"] == epoch and record["stored_top1_err"] == pytest.approx(metrics[epoch]["eval_top1_err"])
    assert record["top1_err"] == pytest.approx(metrics[epoch]["eval_top1_err"])  # the same test split, the same weights
    last = _evaluated(capsys, trained / "checkpoints" / "last.pt")
    final = max(metrics)
    assert last["stored_epoch"] == final and last["top1_err"] == pytest.approx(metrics[final]["eval_top1_err"])
    assert record["published_top1_err"] is None  # synthetic data is never set beside a published number


def test_a_suite_checkpoint_without_its_run_folder_is_one_line(trained, tmp_path, capsys):
    alone = tmp_path / "last.pt"
    shutil.copy(trained / "checkpoints" / "last.pt", alone)
    assert evaluate.main(["--checkpoint", str(alone), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json" in err and str(alone) in err


def test_a_suite_checkpoint_that_does_not_fit_its_runs_model_is_one_line(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    state["model"] = {key: value for key, value in list(state["model"].items())[:-2]}
    torch.save(state, run / "checkpoints" / "last.pt")
    assert evaluate.main(["--checkpoint", str(run / "checkpoints" / "last.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ResNet20-S4U1" in err and "config.json" in err and len(err) < 400
