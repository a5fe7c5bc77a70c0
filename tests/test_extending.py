"""docs/extending.md, proved: each of its four changes (a model family, a table, a figure, a backend) is made in a
temporary copy of the package, touching exactly the files the document counts, and the copy then trains,
tabulates, draws or launches with it through the command line, as a user's fork would."""
import filecmp
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "replicate"


@pytest.fixture
def fork(tmp_path: Path) -> Path:
    """A copy of the package to change; its folder goes first on PYTHONPATH when it runs."""
    root = tmp_path / "fork"
    shutil.copytree(PACKAGE, root / "replicate", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def run_in(fork: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(fork), "REPLICATE_CALIBRATION": str(cwd / "calibration.json")}
    done = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def changed_files(fork: Path) -> set[str]:
    """The files of the copy that differ from (or are not in) the package: what the change touched."""
    changed = set()
    for path in (fork / "replicate").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            original = PACKAGE / path.relative_to(fork / "replicate")
            if not original.exists() or not filecmp.cmp(path, original, shallow=False):
                changed.add(str(path.relative_to(fork)))
    return changed


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + textwrap.dedent(text))


def write_table(folder: Path, name: str, model: str, figures: str = "[]") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        title: "{name}: a user's table"
        dataset: cifar10
        recipe: cifar10
        seeds: 1
        figures: {figures}
        rows:
          - {{id: plain, model: {model}}}
        """))
    return path


FAMILY_DECLARATION = """\
    # -- ConvStack: a user's family (docs/extending.md) ---------------------------------------------------------
    register(Family("convstack", "ConvStack", frozenset({"original", "single"}),
                    examples=lambda dataset: ["ConvStack3", "ConvStack3-S4U1"], depths=frozenset({3, 4})))
    """

FAMILY_MODULE = '''\
    """ConvStack<depth>: depth 3x3 convolutions of 16 channels; -SsUu shares one basis among them."""
    from torch import nn

    from ..zoo import ModelConfig
    from .blocks import BasisBank
    from .registry import register_builder


    class ConvStack(nn.Module):
        def __init__(self, config: ModelConfig) -> None:
            super().__init__()
            self.shared_bases = BasisBank()
            self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
            layout = config.layout
            if layout.shares:
                group = self.shared_bases.new_group("stack", [(layout.shared_rank, 16, 3, 3)])
                self.convs = nn.ModuleList(group.conv(0, 16, 16, unique_rank=layout.unique_rank)
                                           for _ in range(config.depth))
            else:
                self.convs = nn.ModuleList(nn.Conv2d(16, 16, 3, padding=1, bias=False) for _ in range(config.depth))
            self.norms = nn.ModuleList(nn.BatchNorm2d(16) for _ in range(config.depth))
            self.head = nn.Linear(16, config.num_classes)

        def forward(self, x):
            x = self.stem(x)
            for conv, norm in zip(self.convs, self.norms):
                x = nn.functional.relu(norm(conv(x)))
            return self.head(x.mean((2, 3)))


    register_builder("convstack", ConvStack)
    '''


@pytest.mark.slow
def test_a_model_family_is_a_declaration_a_builder_module_and_an_import_line(fork, tmp_path):
    append(fork / "replicate/zoo/families.py", FAMILY_DECLARATION)
    (fork / "replicate/models/convstack.py").write_text(textwrap.dedent(FAMILY_MODULE))
    append(fork / "replicate/models/__init__.py", "from . import convstack  # noqa: E402,F401  (a user's family)\n")
    assert changed_files(fork) == {"replicate/zoo/families.py", "replicate/models/convstack.py",
                                   "replicate/models/__init__.py"}
    table = write_table(tmp_path, "stacks", "ConvStack3-S4U1")
    run_in(fork, "replicate.run", str(table), "--profile", "smoke", "--results", "results", "--no-progress",
           cwd=tmp_path)
    (run_dir,) = (tmp_path / "results/stacks").glob("convstack3-s4u1-*")
    result = (run_dir / "result.json").read_text()
    assert '"ConvStack3-S4U1"' in result and '"train_ortho"' in (run_dir / "metrics.jsonl").read_text()


@pytest.mark.slow
def test_a_table_is_one_yaml_file(fork, tmp_path):
    write_table(fork / "replicate/specs", "mytable", "ResNet20")
    assert changed_files(fork) == {"replicate/specs/mytable.yaml"}
    assert "mytable" in run_in(fork, "replicate.run", "--list", cwd=tmp_path).stdout
    run_in(fork, "replicate.run", "mytable", "--profile", "smoke", "--results", "results", "--no-progress",
           cwd=tmp_path)
    run_in(fork, "replicate.tables", "mytable", "--results", "results", "--out", "tables", cwd=tmp_path)
    assert "ResNet20" in (tmp_path / "tables/mytable.md").read_text()


FIGURE_MODULE = '''\
    """Run folders per shipped table: a user's figure."""
    from ..results import run_folders
    from . import style
    from .inputs import Context, Prepared

    NAME = "run_counts"


    def prepare(ctx: Context) -> Prepared:
        prepared, _ = ctx.begin(NAME)
        prepared.data = {name: len(run_folders(ctx.results, name)) for name in ctx.tables_with_runs()}
        return prepared


    def draw(prepared: Prepared):
        fig, axes = style.figure(1, 1, 2.0)
        axes[0][0].bar(list(prepared.data), list(prepared.data.values()))
        axes[0][0].set_ylabel("run folders")
        return fig
    '''


@pytest.mark.slow
def test_a_figure_is_a_module_and_its_name_in_the_vocabulary(fork, tmp_path):
    spec = fork / "replicate/spec.py"
    text = spec.read_text()
    vocabulary = 'FIGURES = ("error_vs_complexity", "compression", "gradient_flow", "sharing_depth", "ablation")'
    assert vocabulary in text
    spec.write_text(text.replace(vocabulary, vocabulary[:-1] + ', "run_counts")'))
    (fork / "replicate/figures/run_counts.py").write_text(textwrap.dedent(FIGURE_MODULE))
    assert changed_files(fork) == {"replicate/spec.py", "replicate/figures/run_counts.py"}
    run_in(fork, "replicate.run", "table1", "--profile", "smoke", "--rows", "resnet32", "--seeds", "1",
           "--results", "results", "--no-progress", cwd=tmp_path)
    run_in(fork, "replicate.figures", "--results", "results", "--out", "figures", "--no-progress", cwd=tmp_path)
    assert (tmp_path / "figures/run_counts.png").stat().st_size > 0
    assert "run_counts" in json.loads((tmp_path / "figures/manifest.json").read_text())["figures"]
    assert "up to date" in run_in(fork, "replicate.figures", "--results", "results", "--out", "figures", "--check",
                                  cwd=tmp_path).stdout


BACKEND_MODULE = '''\
    """A user's backend: runs each run in this process, and says so in the ledger."""
    from ..plan import PlannedRun
    from . import ledger
    from .base import Backend
    from .job import LaunchOptions, Outcome, RunJob


    class EchoBackend(Backend):
        name = "echo"
        help = "this process, announced"

        def submit(self, runs: list[PlannedRun], options: LaunchOptions) -> dict[str, Outcome]:
            print(f"echo: {len(runs)} run(s)")
            ledger.record(options.results, runs[0].table, self.name,
                          [{"run_id": r.run_id, "row": r.row.id, "job_id": f"echo-{i}"} for i, r in enumerate(runs)])
            return {run.run_id: RunJob.of(run, options)() for run in runs}
    '''


@pytest.mark.slow
def test_a_backend_is_a_module_and_a_registry_line(fork, tmp_path):
    (fork / "replicate/backends/echo.py").write_text(textwrap.dedent(BACKEND_MODULE))
    registry = fork / "replicate/backends/__init__.py"
    text = registry.read_text()
    line = 'BACKENDS: dict[str, Backend] = {"inline": InlineBackend(), "local": LocalBackend(), "slurm": SlurmBackend()}'
    assert line in text
    registry.write_text(text.replace(line, "from .echo import EchoBackend  # noqa: E402\n\n"
                                     + line + '\nBACKENDS["echo"] = EchoBackend()'))
    assert changed_files(fork) == {"replicate/backends/echo.py", "replicate/backends/__init__.py"}
    table = write_table(tmp_path, "echoed", "ResNet20")
    launched = run_in(fork, "replicate.run", str(table), "--profile", "smoke", "--results", "results",
                      "--no-progress", "--cluster", "echo", cwd=tmp_path)
    assert "echo: 1 run(s)" in launched.stdout
    status = run_in(fork, "replicate.status", str(table), "--profile", "smoke", "--results", "results",
                    cwd=tmp_path)
    assert "1 done" in status.stdout
