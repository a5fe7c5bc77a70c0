"""The results store: a run folder's state, its typed result, the pandas API, corrupt results, provenance."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, write_run
from replicate import results
from replicate.results import CorruptResult, RunFolder, RunResult


def test_a_result_reads_back_as_written(tmp_path):
    folder = RunFolder(write_run(tmp_path, "table1", "resnet56", 0, [8.0, 7.0]))
    result = folder.result()
    assert isinstance(result, RunResult) and result.selected.top1_err == 7.0 and folder.state == "done"
    assert RunResult.from_dict(json.loads(folder.result_file.read_text())) == result
    assert json.loads(folder.result_file.read_text())["schema"] == results.SCHEMA


def test_the_committed_results_read_through_the_public_api():
    frame = results.load(REPO / "results", "ablation")
    finished = [d for d in (REPO / "results" / "ablation").iterdir() if (d / "result.json").is_file()]
    assert len(frame) == len(finished) >= 22  # the first 11 rows x 2 seeds, and every seed since
    assert set(frame.data) == {"fashion-mnist"} and frame.selected_top1_err.notna().all()
    run_dir = REPO / "results" / "ablation" / frame.run_id.iloc[0]
    assert len(results.load_metrics(run_dir)) == 6


@pytest.mark.parametrize("content,reason", [("", "empty"), ("{}", "KeyError"), ('{"run_id": "x", "conf', "JSON")])
def test_a_truncated_empty_or_foreign_result_is_corrupt_and_named(tmp_path, content, reason):
    folder = RunFolder(write_run(tmp_path, "table1", "resnet56", 0, [8.0, 7.0]))
    folder.result_file.write_text(content)
    assert folder.state == "corrupt"
    with pytest.raises(CorruptResult) as error:
        folder.result()
    assert str(folder.result_file) in str(error.value) and "\n" not in str(error.value)
    assert reason in str(error.value)
    finished, corrupt = results.runs(tmp_path, "table1")
    assert finished == [] and corrupt == [folder]
    assert results.load(tmp_path, "table1").empty  # the pandas API leaves it out rather than raising


def test_a_corrupt_run_is_moved_aside_never_deleted(tmp_path):
    folder = RunFolder(write_run(tmp_path, "table1", "resnet56", 0, [8.0, 7.0]))
    folder.result_file.write_text("{")
    aside = folder.move_aside()
    assert not folder.path.exists() and (aside / "result.json").read_text() == "{"
    assert aside.parent == tmp_path / "table1" / ".aside" and results.run_folders(tmp_path, "table1") == []


def test_the_suites_own_outputs_do_not_make_the_code_dirty(tmp_path):
    """Provenance says "dirty" for changed code only: rewriting results, tables or figures is what the suite does."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "replicate", repo / "replicate", ignore=shutil.ignore_patterns("__pycache__"))
    outputs = [repo / "figures" / "manifest.json", repo / "tables" / "generated" / "table1.md",
               repo / "results" / "table1" / "run" / "result.json"]
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("first")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-q", "-m", "x"], check=True)
    for path in outputs:
        path.write_text("rewritten by the suite")

    def code_version() -> dict:
        probe = "import replicate.results as r, json; print(r.__file__); print(json.dumps(r.code_version()))"
        completed = subprocess.run([sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True,
                                   env={**os.environ, "PYTHONPATH": str(repo)}, timeout=60)
        where, version = completed.stdout.splitlines()
        assert where.startswith(str(repo)), where
        return json.loads(version)

    assert code_version()["dirty"] is False
    (repo / "replicate" / "stats.py").write_text((repo / "replicate" / "stats.py").read_text() + "\n# edit\n")
    assert code_version()["dirty"] is True


def test_a_wrong_typed_field_is_a_corrupt_result_everywhere(tmp_path, capsys):
    """status and tables agree: a result whose error is not a number is corrupt, named, never 'done'."""
    import json

    from replicate import status, tables

    folder = RunFolder(write_run(tmp_path, "table1", "resnet56", 0, [8.0, 7.0], profile="smoke"))
    record = json.loads(folder.result_file.read_text())
    record["selected"]["top1_err"] = "abc"
    folder.result_file.write_text(json.dumps(record))
    assert folder.state == "corrupt"
    assert status.main(["table1", "--results", str(tmp_path), "--profile", "smoke", "--rows", "resnet56"]) == 1
    assert "corrupt" in capsys.readouterr().out
    assert tables.main(["table1", "--results", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert f"warning: {folder.result_file} is unreadable" in capsys.readouterr().err
