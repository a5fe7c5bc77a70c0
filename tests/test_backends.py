"""Execution backends behind one interface: a new backend is one module plus a registry line (proved with a toy
one defined here), and run/status know no backend by name."""
import json

import grimp

from conftest import REPO

from replicate import run, status
from replicate.backends import BACKENDS, Backend, Outcome, RunJob, RunState
from replicate.backends import ledger


class ToyBackend(Backend):
    """A queue of its own: it trains the first run it is given at once and queues the others (trained by
    nobody: status reports them pending, with the label of the queue its option named)."""

    name = "toy"
    help = "a toy queue"

    def __init__(self):
        self.queue: set[str] = set()

    def add_arguments(self, parser):
        parser.add_argument_group("toy (--cluster toy)").add_argument("--toy-label", default="toy queue")

    def configure(self, args):
        return args.toy_label

    def jobs(self, runs, options):
        return [{"runs": [r.run_id for r in runs], "label": options.config}]

    def submit(self, runs, options):
        outcome, entries = {}, []
        for i, planned in enumerate(runs):
            job_id = f"toy-{planned.row.id}"
            entries.append({"run_id": planned.run_id, "row": planned.row.id, "job_id": job_id,
                            "label": options.config})
            self.queue.discard(planned.run_id)
            if i == 0:
                outcome[planned.run_id] = RunJob.of(planned, options)()
            else:
                self.queue.add(planned.run_id)
                outcome[planned.run_id] = Outcome("submitted", f"job {job_id}")
        ledger.record(options.results, runs[0].table, self.name, entries)
        return outcome

    def states(self, submitted):
        return {s.run.run_id: RunState(s.run, "pending", s.record["job_id"], f"{s.record['label']}: queued")
                if s.run.run_id in self.queue else None for s in submitted}


def test_a_new_backend_is_one_class_and_a_registry_line(tiny_spec, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(BACKENDS, "toy", ToyBackend())
    results = tmp_path / "results"
    common = [str(tiny_spec), "--profile", "smoke", "--results", str(results), "--no-progress", "--cluster", "toy"]
    assert run.main([*common, "--toy-label", "lab queue", "--dry-run", "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["jobs"] == [{"runs": [r["run_id"] for r in plan["runs"]], "label": "lab queue"}]

    assert run.main([*common, "--toy-label", "lab queue"]) == 0
    out = capsys.readouterr().out
    assert "1 done, 1 submitted of 2 runs" in out and "follow them with: python -m replicate.status" in out
    records = ledger.latest(results, "tiny")
    assert {r["backend"] for r in records.values()} == {"toy"} and len(records) == 2

    reported = [str(tiny_spec), "--profile", "smoke", "--results", str(results)]
    assert status.main(reported) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("base ") and " done " in line and "job toy-base" in line for line in lines)
    assert any(line.startswith("plain ") and "pending" in line and "job toy-plain" in line
               and "lab queue: queued" in line for line in lines)
    assert "1 done, 1 pending (2 runs)" in lines

    assert run.main([*common, "--wait"]) == 0  # the queued run again: trained, then the shared wait loop
    assert "1 done of 1 runs" in capsys.readouterr().out
    assert status.main(reported) == 0
    assert "2 done (2 runs)" in capsys.readouterr().out


def test_a_ledger_line_without_a_backend_was_written_by_slurm(tmp_path):
    from replicate.atomic import append_jsonl

    append_jsonl(ledger.submissions_file(tmp_path, "t"), [{"run_id": "a", "job_id": "12_0"}])
    ledger.record(tmp_path, "t", "toy", [{"run_id": "b", "job_id": "toy-0"}])
    latest = ledger.latest(tmp_path, "t")
    assert latest["a"]["backend"] == "slurm" and latest["b"]["backend"] == "toy"


def test_run_and_status_know_no_backend_by_name():
    graph = grimp.build_graph("replicate")
    for module in ("replicate.run", "replicate.status"):
        imported = graph.find_modules_directly_imported_by(module)
        assert not {m for m in imported if m.startswith("replicate.backends.")}, module
        source = (REPO / "replicate" / f"{module.split('.')[1]}.py").read_text()
        assert '"slurm"' not in source and "'slurm'" not in source


def test_every_registered_backend_is_named_as_registered():
    assert {name: backend.name for name, backend in BACKENDS.items()} == {name: name for name in BACKENDS}
    assert list(BACKENDS) == ["inline", "local", "slurm"]


def test_an_option_of_another_backend_is_refused_not_ignored(tiny_spec, tmp_path, capsys):
    """--pack 2 without --cluster slurm would silently train unpacked: one line says whose option it is."""
    argv = [str(tiny_spec), "--profile", "smoke", "--results", str(tmp_path), "--dry-run", "--pack", "2"]
    assert run.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --pack is an option of --cluster slurm: add --cluster slurm, or leave --pack out"
    assert run.main([*argv, "--cluster", "slurm", "--cluster-config", "local", "--format", "json"]) == 0
