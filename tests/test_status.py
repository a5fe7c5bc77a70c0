"""``replicate.status`` without a cluster: it names what it reports, points at the rest, and flags corrupt runs."""
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
