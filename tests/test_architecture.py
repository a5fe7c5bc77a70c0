"""The architecture stays as drawn: no import cycle, and no module imports one above it in the data flow."""
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


@pytest.mark.parametrize("command", ["run", "status", "tables", "figures", "evaluate", "complexity", "bench"])
def test_every_command_helps_cleanly_with_its_defaults(command):
    """--help: no library warning in front of it, the description once, the defaults shown."""
    completed = subprocess.run([sys.executable, "-m", f"replicate.{command}", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and completed.stderr == ""
    assert "(default:" in completed.stdout and "::" not in completed.stdout and "``" not in completed.stdout
    description = completed.stdout.split("\n\n")[1]
    assert completed.stdout.count(description) == 1
