"""What every command shares: exact option names, and each failure a clean line (``replicate.errors``)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO


def _parser_calls() -> list[tuple[str, ast.Call]]:
    """Every ``ArgumentParser(...)`` call in the package's source, with the file it is in."""
    calls = []
    for path in sorted((REPO / "replicate").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                    == "ArgumentParser":
                calls.append((str(path.relative_to(REPO)), node))
    return calls


def test_no_parser_takes_an_abbreviation_for_an_option():
    """``--seed 2`` must not pass for ``--seeds 2``: every parser is built with ``allow_abbrev=False``."""
    calls = _parser_calls()
    assert len(calls) >= 8
    lax = [f"{path}:{call.lineno}" for path, call in calls
           if not any(k.arg == "allow_abbrev" and isinstance(k.value, ast.Constant) and k.value.value is False
                      for k in call.keywords)]
    assert not lax, f"parsers that accept abbreviations: {lax}"


def _main(command: str):
    """The in-process entry point of ``python -m replicate.<command>``."""
    import importlib

    return importlib.import_module(f"replicate.{command}" + (".__main__" if command == "figures" else "")).main


@pytest.mark.parametrize("command,args", [
    ("run", ["table1", "--dry-run"]), ("status", ["table1"]), ("tables", ["table1"]), ("figures", []),
    ("evaluate", ["table1", "--checkpoints", "."]), ("tables", ["table1", "--out"]), ("figures", ["--out"]),
])
def test_an_empty_folder_option_is_refused_not_taken_for_the_working_directory(command, args, capsys, tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)  # where '' would have read and written
    argv = [*args, ""] if args[-1:] == ["--out"] else [*args, "--results", ""]
    option = "--out" if "--out" in args else "--results"
    with pytest.raises(SystemExit) as exited:
        _main(command)(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert f"argument {option}: an empty path is no folder" in line
    assert not any(tmp_path.iterdir())


def test_tables_refuse_a_results_path_that_is_a_file(tmp_path, capsys):
    from replicate import tables

    (tmp_path / "file").write_text("")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "table2").write_text("")
    out = tmp_path / "out"
    for results, culprit in [(tmp_path / "file", tmp_path / "file"), (tmp_path / "store", tmp_path / "store" / "table2")]:
        assert tables.main(["table1", "table2", "--results", str(results), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {culprit} is a file, not a folder")
    assert not out.exists()
