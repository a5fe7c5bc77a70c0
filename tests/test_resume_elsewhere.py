"""Where a run started, and a resume on another device or thread count: one warning line, recorded (issue 28)."""
import json

import torch

from replicate import plan, spec
from replicate.atomic import atomic_write_json
from replicate.train import Trainer


def _tiny_run(tmp_path, spec_path):
    return plan.expand(spec.load(str(spec_path)), tmp_path / "results", "smoke")[0]


def test_a_resume_on_another_device_or_thread_count_warns_once_and_is_recorded(restart_spec, tmp_path, capsys):
    run = _tiny_run(tmp_path, restart_spec)
    Trainer(run.config, run.folder, progress=False, log=lambda _: None).run()
    provenance = json.loads((run.folder.path / "provenance.json").read_text())
    assert {"device", "threads"} <= set(provenance)  # where it started
    same = json.loads(run.folder.result_file.read_text())
    assert "resumed_elsewhere" not in same["execution"] and "resumed_elsewhere" not in provenance
    # as if it had started on another machine: 7 threads of another CPU
    atomic_write_json(run.folder.path / "provenance.json",
                      {**provenance, "device": "cpu (elsewhere, 7 threads)", "threads": 7})
    run.folder.result_file.unlink()
    capsys.readouterr()
    Trainer(run.config, run.folder, progress=False, log=lambda _: None).run()
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("warning:")]
    assert "started on cpu (elsewhere, 7 threads) with 7 threads" in line and f"{torch.get_num_threads()} threads" in line
    assert "resumes after epoch 2" in line and "same device and thread count" in line
    (moved,) = json.loads((run.folder.path / "provenance.json").read_text())["resumed_elsewhere"]
    assert moved["after_epoch"] == 2 and moved["threads"] == torch.get_num_threads() and moved["device"] != "cpu (elsewhere"
    execution = json.loads(run.folder.result_file.read_text())["execution"]
    assert execution["resumed_elsewhere"] == [moved] and execution["started"] == {
        "device": "cpu (elsewhere, 7 threads)", "threads": 7}
