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


@pytest.mark.parametrize("command", ["run", "status", "tables", "figures", "evaluate", "complexity", "bench"])
def test_every_command_helps_cleanly_with_its_defaults(command):
    """--help: no library warning in front of it, the description once, the defaults shown."""
    completed = subprocess.run([sys.executable, "-m", f"replicate.{command}", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and completed.stderr == ""
    assert "(default:" in completed.stdout and "::" not in completed.stdout and "``" not in completed.stdout
    description = completed.stdout.split("\n\n")[1]
    assert completed.stdout.count(description) == 1
