"""The architecture stays as drawn: no import cycle, and no module imports one above it in the data flow."""
import json
import subprocess
import sys

import grimp
import pytest

from conftest import REPO


def test_no_module_imports_one_above_it():
    """The layers contract in pyproject.toml ([tool.importlinter]), checked by import-linter."""
    completed = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                                "lint_imports_command()"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_no_import_cycles_even_inside_functions():
    graph = grimp.build_graph("replicate")
    cycles = sorted({tuple(sorted((module, imported))) for module in graph.modules
                     for imported in graph.find_modules_directly_imported_by(module)
                     if graph.chain_exists(importer=imported, imported=module)})
    assert not cycles, f"import cycles: {cycles}"


READERS = ["config", "spec", "plan", "results", "analysis", "stats", "tables", "status", "zoo", "complexity",
           "catalog"]


@pytest.mark.parametrize("module", READERS)
def test_readers_import_no_torch(module):
    """What only reads results or prints a plan never pays for torch (its import is most of a CLI's start-up):
    imported in a fresh interpreter, ``torch`` is not loaded (the import-linter contract checks the graph)."""
    code = f"import sys, replicate.{module}; print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False", f"importing replicate.{module} loads torch"


def test_a_plan_and_its_sizes_come_from_the_cache_without_torch(tmp_path):
    """A plan's sizes and the sharing-depth figure's blocks per basis are read from the committed cache, not
    counted on a built network: a depth larger than a stage of the mini profile's ResNet20 lands at 2."""
    code = ("import sys; from replicate import plan, spec; from replicate.complexity import lookup; "
            f"runs = {{p: plan.expand(spec.load('depth'), {str(tmp_path)!r}, p) for p in ('full', 'mini')}}; "
            "print({p: [lookup(r.config.model).blocks_per_basis for r in rs] for p, rs in runs.items()}, "
            "'torch' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "{'full': [1.0, 2.0, 4.0, 8.0], 'mini': [1.0, 2.0, 2.0, 2.0]} False"


COMMANDS = ["run", "status", "tables", "figures", "evaluate", "complexity", "bench"]
HELP_OF_EACH = """
import contextlib, io, json, runpy, sys
helps = {}
for command in sys.argv[1:]:
    for name in [m for m in sys.modules if m == "replicate" or m.startswith("replicate.")]:
        del sys.modules[name]  # each command starts as python -m starts it (torch stays imported: the cost)
    sys.argv = [f"python -m replicate.{command}", "--help"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(f"replicate.{command}", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exited:
            code = exited.code
    helps[command] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(helps))
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, dict]:
    """Each command's ``--help`` as ``python -m`` runs it, all in one fresh interpreter (one torch import, not
    seven): the warnings a library prints on import or on start would show on its stderr."""
    completed = subprocess.run([sys.executable, "-c", HELP_OF_EACH, *COMMANDS], cwd=REPO, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0 and completed.stderr == "", completed.stderr
    return json.loads(completed.stdout)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_helps_cleanly_with_its_defaults(helps, command):
    """--help: no library warning in front of it, the description once, the defaults shown."""
    completed = helps[command]
    assert completed["code"] == 0 and completed["stderr"] == ""
    stdout = completed["stdout"]
    assert "(default:" in stdout and "::" not in stdout and "``" not in stdout
    description = stdout.split("\n\n")[1]
    assert stdout.count(description) == 1
