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
                    in ("ArgumentParser", "Parser"):
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
    bare = [f"{path}:{call.lineno}" for path, call in calls if getattr(call.func, "attr", "") == "ArgumentParser"]
    assert not bare, f"parsers that print argparse's usage block on a mistake (use errors.Parser): {bare}"


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


def _read_only(folder: Path) -> Path:
    """``folder`` made read-only; the test is skipped where that does not stop writing (root)."""
    import os

    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        folder.chmod(0o755)
        pytest.skip("this user writes into read-only folders (root)")
    return folder


def _unwritable_outs(tmp_path: Path) -> list[Path]:
    """An --out under a regular file (unwritable even for root) and, where it binds, a read-only folder."""
    (tmp_path / "file").write_text("")
    outs = [tmp_path / "file" / "out"]
    try:
        outs.append(_read_only(tmp_path / "locked") / "out")
    except pytest.skip.Exception:
        pass
    return outs


def test_tables_refuse_an_unwritable_out_before_writing(tmp_path, capsys):
    from conftest import write_run
    from replicate import tables

    write_run(tmp_path / "results", "table1", "resnet56", 0, [8.0, 7.0])
    for out in _unwritable_outs(tmp_path):
        assert tables.main(["table1", "--results", str(tmp_path / "results"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: --out {out}") and "Traceback" not in err
        assert not out.exists()


def test_a_closed_pipe_ends_quietly_with_status_1(capsys):
    """``--format json | head``: the reader left; no traceback, and 1 says the output was cut short."""
    from replicate.errors import cli

    @cli
    def main(argv: list[str] | None = None) -> int:
        print("the first lines")
        raise BrokenPipeError(32, "Broken pipe")

    assert main([]) == 1
    assert capsys.readouterr().err == ""


def test_a_closed_pipe_in_a_real_process_leaves_nothing_on_stderr():
    """The docs' recipe: stdout goes to devnull, so the interpreter's last flush cannot fail again."""
    import subprocess
    import sys

    program = ("import sys\nfrom replicate.errors import cli\n\n@cli\ndef main():\n    for i in range(10 ** 6):\n"
               "        print(i)\n    return 0\n\nsys.exit(main())\n")
    process = subprocess.Popen([sys.executable, "-c", program], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.readline()
    process.stdout.close()  # as head does after its lines
    err = process.stderr.read()
    assert process.wait(timeout=60) == 1 and err == b""


def test_ctrl_c_is_one_line_and_status_130(capsys):
    from replicate.errors import cli

    @cli
    def main(argv: list[str] | None = None) -> int:
        raise KeyboardInterrupt

    assert main([]) == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("command", ["run", "status", "tables", "figures", "evaluate", "complexity", "bench",
                                     "report", "goldens"])
def test_a_mistyped_option_is_one_line_naming_help(command, capsys):
    """argparse prints its whole usage block before the error; ours is the error alone, pointing at --help."""
    import importlib

    module = importlib.import_module(f"replicate.{command}" + (".__main__" if command in ("figures", "bench") else ""))
    with pytest.raises(SystemExit) as exited:
        module.main(["--no-such-option"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err
    assert err.startswith(f"python -m replicate.{command}: error: ")
    assert err.rstrip().endswith(f"(python -m replicate.{command} --help)")
