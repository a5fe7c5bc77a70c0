"""``replicate.status`` without a cluster: it names what it reports, points at the rest, and flags corrupt runs."""
import re
from pathlib import Path

import pytest

from conftest import write_run
from replicate import status


def test_status_names_its_profile_and_points_at_other_profiles_with_runs(tmp_path, capsys):
    for seed in (0, 1):
        write_run(tmp_path, "ablation", "c10-original", seed, [20.0, 19.0], profile="mini")
    write_run(tmp_path, "ablation", "c10-single", 0, [20.0, 19.0], profile="smoke")
    assert status.main(["ablation", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (f"ablation: profile full, protocol paper, precision fp32, results in "
                                   f"{tmp_path / 'ablation'}")
    assert "20 not submitted (20 runs)" in out
    assert (f"also in the store: 2 run folder(s) of profile mini, protocol clean, precision fp32: python -m "
            f"replicate.status ablation --profile mini --results {tmp_path}") in out
    assert "1 run folder(s) of profile smoke, protocol paper, precision fp32" in out
    assert status.main(["ablation", "--results", str(tmp_path), "--profile", "mini"]) == 0
    assert "profile mini, protocol clean" in capsys.readouterr().out
    assert status.main(["ablation", "--results", str(tmp_path), "--seeds", "-1"]) == 2  # one line, no traceback
    assert capsys.readouterr().err == "error: --seeds must be at least 1\n"


def test_a_corrupt_result_shows_as_corrupt_not_done(tmp_path, capsys):
    broken = write_run(tmp_path, "table1", "resnet56", 0, [8.0, 7.0], profile="smoke") / "result.json"
    broken.write_text("")
    assert status.main(["table1", "--results", str(tmp_path), "--profile", "smoke", "--rows", "resnet56"]) == 1
    out = capsys.readouterr().out
    assert "corrupt" in out and str(broken) in out and "1 corrupt (1 runs)" in out


def test_a_results_path_that_is_a_file_is_refused_not_reported_as_not_submitted(tmp_path, capsys):
    """A file given as the results store (or standing where a table's folder goes) is one line, exit 2."""
    (tmp_path / "file").write_text("")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "table1").write_text("")
    for results, culprit in [(tmp_path / "file", tmp_path / "file"), (tmp_path / "file" / "sub", tmp_path / "file"),
                             (tmp_path / "store", tmp_path / "store" / "table1")]:
        assert status.main(["table1", "--results", str(results), "--profile", "smoke"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1
        assert captured.err.startswith(f"error: {culprit} is a file, not a folder")


# -- SLURM's word on a pending job, through fake sacct/squeue (no cluster) ------------------------------------
def _submitted(tmp_path, job_id: str):
    """One smoke run of table1 recorded as submitted to SLURM as ``job_id``."""
    from replicate import plan, spec
    from replicate.backends.ledger import submissions_file
    from replicate.atomic import append_jsonl

    run = plan.expand(spec.load("table1"), tmp_path, "smoke", rows="resnet56")[0]
    append_jsonl(submissions_file(tmp_path, "table1"), [{"run_id": run.run_id, "job_id": job_id,
                                                         "row": run.row.id, "folder": str(tmp_path / "logs")}])
    return run


def _fake_queue(tmp_path, monkeypatch, reason: str):
    from conftest import put_on_path

    put_on_path(monkeypatch, tmp_path / "bin", {"sacct": 'echo "41_0|PENDING"',
                                                "squeue": f'echo "41_0|{reason}"', "sinfo": "echo debug"})


def test_a_pending_job_shows_slurms_reason(tmp_path, monkeypatch, capsys):
    _submitted(tmp_path, "41_0")
    _fake_queue(tmp_path, monkeypatch, "Priority")
    assert status.main(["table1", "--results", str(tmp_path), "--profile", "smoke", "--rows", "resnet56"]) == 0
    out = capsys.readouterr().out
    assert "pending" in out and "job 41_0" in out and "SLURM: Priority" in out


def test_a_job_whose_reason_never_clears_is_stuck_with_the_fix(tmp_path, monkeypatch, capsys):
    _submitted(tmp_path, "41_0")
    _fake_queue(tmp_path, monkeypatch, "PartitionConfig")
    assert status.main(["table1", "--results", str(tmp_path), "--profile", "smoke", "--rows", "resnet56"]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "41_0" in line)
    assert "stuck" in line and "PartitionConfig" in line and "scancel 41" in line
    assert "1 stuck" in out


# -- every state of STATES through the public commands: ``run --cluster slurm`` submits to a fake sbatch, and
#    ``status`` reads fake sacct/squeue answers (no cluster; the tests hold whichever module owns SLURM) -------
ROW = ("table1", "--profile", "smoke", "--rows", "resnet56")


@pytest.fixture
def answers(tmp_path, monkeypatch) -> Path:
    """sbatch (accepts, job 41), sinfo, sacct and squeue first on PATH; sacct and squeue print the files
    ``answers/sacct`` and ``answers/squeue`` (empty: SLURM knows no job) that a test writes."""
    from conftest import put_on_path

    folder = tmp_path / "answers"
    folder.mkdir()
    for name in ("sacct", "squeue"):
        (folder / name).write_text("")
    put_on_path(monkeypatch, tmp_path / "slurm-bin", {
        "sbatch": 'echo "Submitted batch job 41"', "sinfo": "echo debug",
        "sacct": f"cat {folder / 'sacct'}", "squeue": f"cat {folder / 'squeue'}"})
    return folder


def _submit(results: Path) -> Path:
    """``run --cluster slurm`` of one smoke run (job 41: a single run is a job, not an array); the job's log
    folder, as the command prints it."""
    from conftest import run_here

    submitted = run_here(*ROW, "--cluster", "slurm", "--cluster-config", "local", "--results", str(results))
    assert submitted.returncode == 0, submitted.stderr
    assert "submitted 1 run(s) as job array(s) 41" in submitted.stdout
    return Path(re.search(r"logs in (\S+)", submitted.stdout)[1]) / "41"


def _status(results: Path) -> tuple[int, str, str]:
    """``status`` of that run: exit status, its line (row, seed, state, job, detail), the counts line."""
    from conftest import call_cli

    shown = call_cli("status", *ROW, "--results", str(results))
    assert shown.stderr == ""
    lines = shown.stdout.splitlines()
    (line,) = [line for line in lines if line.startswith("resnet56 ")]
    return shown.returncode, " ".join(line.split()), lines[lines.index(line) + 1]


@pytest.mark.parametrize("sacct,squeue,expected", [
    ("41|PENDING", "41|Priority", "pending job 41 SLURM: Priority"),
    ("41|PENDING", "", "pending job 41"),
    ("41|REQUEUED", "41|BeginTime", "pending job 41 requeued; SLURM: BeginTime"),
    ("41|RUNNING", "", "running job 41"),
    ("41|COMPLETING", "", "running job 41"),
    ("", "", "pending job 41"),  # sacct lags a fresh submission: queued, not lost
])
def test_a_submitted_run_is_pending_or_running_as_sacct_says(tmp_path, answers, sacct, squeue, expected):
    results = tmp_path / "results"
    _submit(results)
    (answers / "sacct").write_text(sacct + "\n")
    (answers / "squeue").write_text(squeue + "\n")
    code, line, counts = _status(results)
    assert (code, line) == (0, f"resnet56 seed 0 {expected}")
    assert counts == f"1 {expected.split()[0]} (1 runs)"


def test_a_queued_job_that_can_never_start_is_stuck(tmp_path, answers):
    results = tmp_path / "results"
    _submit(results)
    (answers / "sacct").write_text("41|PENDING\n")
    (answers / "squeue").write_text("41|PartitionTimeLimit\n")
    code, line, counts = _status(results)
    assert code == 1 and counts == "1 stuck (1 runs)"
    assert line.startswith("resnet56 seed 0 stuck job 41 SLURM: PartitionTimeLimit: the time asked for is over")
    assert "scancel 41 and relaunch" in line


def test_a_job_that_ended_without_a_result_is_failed_with_the_end_of_its_traceback(tmp_path, answers):
    results = tmp_path / "results"
    logs = _submit(results)
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "41_0_log.err").write_text("UserWarning: a library's chatter\nTraceback (most recent call last):\n"
                                         '  File "train.py", line 1, in <module>\n'
                                         "FloatingPointError: loss became inf\n")
    for sacct, reason in [("41|FAILED", "FAILED"), ("41|OUT_OF_MEMORY", "OUT_OF_MEMORY"),
                          ("41|COMPLETED", "job ended without a result")]:
        (answers / "sacct").write_text(sacct + "\n")
        code, line, counts = _status(results)
        assert code == 1 and counts == "1 failed (1 runs)"
        assert line.startswith(f"resnet56 seed 0 failed job 41 {reason}: ")
        assert "FloatingPointError: loss became inf" in line and str(logs / "41_0_log.err") in line
        assert "chatter" not in line
    (logs / "41_0_log.err").write_text("")
    code, line, _ = _status(results)
    assert code == 1 and line.endswith(f"job ended without a result: no traceback in the logs of {logs}")


def test_a_finished_run_is_done_whatever_sacct_says_and_keeps_its_job(tmp_path, answers):
    results = tmp_path / "results"
    _submit(results)
    write_run(results, "table1", "resnet56", 0, [8.0, 7.0], profile="smoke")
    (answers / "sacct").write_text("41|RUNNING\n")  # the job is still tidying up: the result is final
    code, line, counts = _status(results)
    assert (code, line, counts) == (0, "resnet56 seed 0 done job 41", "1 done (1 runs)")


def test_a_corrupt_result_is_corrupt_once_its_job_ended_and_running_while_it_runs(tmp_path, answers):
    results = tmp_path / "results"
    _submit(results)
    broken = write_run(results, "table1", "resnet56", 0, [8.0, 7.0], profile="smoke") / "result.json"
    broken.write_text("{")
    (answers / "sacct").write_text("41|RUNNING\n")  # being rewritten by its job
    assert _status(results)[:2] == (0, "resnet56 seed 0 running job 41")
    (answers / "sacct").write_text("41|COMPLETED\n")
    code, line, counts = _status(results)
    assert code == 1 and counts == "1 corrupt (1 runs)"
    assert line == f"resnet56 seed 0 corrupt {broken} is unreadable: a relaunch moves the folder aside and redoes the run"


def test_a_run_never_submitted_says_whether_it_resumes(tmp_path, answers):
    results = tmp_path / "results"
    assert _status(results) == (0, "resnet56 seed 0 not submitted", "1 not submitted (1 runs)")
    folder = write_run(results, "table1", "resnet56", 0, [8.0], profile="smoke", finished=False)
    (folder / "checkpoints").mkdir(exist_ok=True)
    (folder / "checkpoints" / "last.pt").write_bytes(b"")  # a checkpoint from an inline run, killed
    assert _status(results) == (0, "resnet56 seed 0 not submitted a checkpoint exists: it resumes when launched",
                                "1 not submitted (1 runs)")


def test_every_state_is_tested_here():
    """The states above are status.STATES: a new state needs its test."""
    tested = {"pending", "running", "stuck", "failed", "done", "corrupt", "not submitted"}
    assert tested == set(status.STATES)
