"""Progress a person can follow (issue 28): epoch lines that name their row and seed, a per-batch bar on a
terminal only, and TensorBoard event files beside metrics.jsonl, read back with TensorBoard's own reader."""
import io
import math

import pytest

from replicate import plan, spec
from replicate.atomic import read_jsonl
from replicate.train import Trainer


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(tmp_path, restart_spec):
    return plan.expand(spec.load(str(restart_spec)), tmp_path / "results", "smoke")[0]


def _trainer(run, **options) -> Trainer:
    return Trainer(run.config, run.folder, meta={"table": "restart", "row": run.row.id, "label": run.row.label},
                   **options)


def test_epoch_lines_name_their_row_and_seed_and_the_bar_shows_on_a_terminal_only(restart_spec, tmp_path,
                                                                                   monkeypatch):
    """Also: a run without ``tensorboard`` writes no event files (its second training, here, checks it)."""
    run = _run(tmp_path, restart_spec)
    lines = []
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    _trainer(run, progress=True, log=lines.append).run()
    epochs = [line for line in lines if "loss" in line]
    assert "shared seed 0: epoch 2: restart from the best checkpoint" in lines[1]
    assert [line.split(":")[0] for line in epochs] == ["shared seed 0", "shared seed 0"]
    assert epochs[0].startswith("shared seed 0: epoch   1/2")
    assert "shared seed 0 epoch 1/2" in terminal.getvalue() and "batch" in terminal.getvalue()  # the per-batch bar

    plain = io.StringIO()  # not a terminal (a log file, a pipe): no bar, whatever progress says
    monkeypatch.setattr("sys.stderr", plain)
    run.folder.remove()
    _trainer(run, progress=True, log=lambda _: None).run()
    assert "batch" not in plain.getvalue()
    assert not (run.folder.path / "tensorboard").exists()  # not asked for: no event files (tensorboard=False)


def test_tensorboard_event_files_hold_the_metrics_and_gradient_statistics(restart_spec, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _run(tmp_path, restart_spec)
    _trainer(run, progress=False, log=lambda _: None, tensorboard=True).run()
    assert list(run.folder.path.glob("tensorboard/events.out.tfevents.*"))
    events = EventAccumulator(str(run.folder.path / "tensorboard"))
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    metrics = read_jsonl(run.folder.path / "metrics.jsonl")
    expected = {"lr": "lr", "loss/train": "train_loss", "loss/train_ce": "train_ce", "R/train": "train_ortho",
                "error/test": "eval_top1_err", "error_top5/test": "eval_top5_err", "loss/test": "eval_loss"}
    for tag, key in expected.items():
        assert [step for step, _ in scalars[tag]] == [m["epoch"] for m in metrics]
        assert [value for _, value in scalars[tag]] == pytest.approx([m[key] for m in metrics], rel=1e-6)
    assert [v for _, v in scalars["error/train"]] == pytest.approx([100 - m["train_top1"] for m in metrics])
    stats = read_jsonl(run.folder.path / "gradstats.jsonl")
    for basis in {s["basis"] for s in stats}:
        ours = [s["mean_abs"] for s in stats if s["basis"] == basis]
        assert [v for _, v in scalars[f"gradients/{basis}/mean_abs"]] == pytest.approx(ours, rel=1e-6)
        steps = [step for step, _ in scalars[f"gradients/{basis}/l2"]]
        assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one global step per logged batch
    assert all(math.isfinite(v) for values in scalars.values() for _, v in values)


def test_run_takes_tensorboard_and_passes_it_to_every_backends_job(restart_spec, tmp_path):
    from replicate.backends import LaunchOptions, RunJob
    from replicate.run import parser

    args = parser().parse_args([str(restart_spec), "--tensorboard"])
    assert args.tensorboard and not parser().parse_args([str(restart_spec)]).tensorboard
    run = _run(tmp_path, restart_spec)
    assert RunJob.of(run, LaunchOptions(results=tmp_path, tensorboard=True)).tensorboard
    assert not RunJob.of(run, LaunchOptions(results=tmp_path)).tensorboard
