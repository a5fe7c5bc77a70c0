"""``pip install .`` (not editable) gives a working suite: the wheel carries the specs, profiles and caches."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, installed (without dependencies) into a fresh folder."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: building in the checkout would leave build/ and *.egg-info behind
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "replicate", source / "replicate", ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(root / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = (root / "dist").glob("replicate-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                              str(root / "site"), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    return wheel, root / "site"


def test_the_wheel_carries_every_file_the_suite_reads(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("replicate/data/published.yaml", "replicate/data/complexity.csv",
                     "replicate/specs/table1.yaml", "replicate/specs/ablation.yaml",
                     "replicate/clusters/default.yaml", "replicate/clusters/local.yaml"):
        assert expected in names, expected


def test_an_installed_suite_lists_and_plans_tables_outside_the_checkout(installed, tmp_path):
    _, site = installed
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "replicate.run", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    where = subprocess.run([sys.executable, "-c", "import replicate; print(replicate.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True)
    assert where.stdout.startswith(str(site))
    listed = run("--list")
    assert listed.returncode == 0 and "table1" in listed.stdout and "ablation" in listed.stdout
    planned = run("table1", "--dry-run", "--cluster", "slurm", "--cluster-config", "local", "--profile", "smoke")
    assert planned.returncode == 0, planned.stderr
    assert "resnet56-s16u1" in planned.stdout and f"results in {os.path.join('results', 'table1')}" in planned.stdout
    assert not (tmp_path / "results").exists()
