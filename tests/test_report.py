"""The report page: one self-contained HTML file with every table, its claims and definitions, the figures,
what was run and what is missing; rendered for real in headless Chromium (Debian's chromium; locally the
rendering test skips, saying how to install it; in CI it must run)."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import write_run
from replicate import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                    reason="chromium not found: apt-get install chromium")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    results, out = root / "results", root / "out"
    for seed in range(3):
        for row, err in (("c10-single", 22.0), ("c10-single-ortho", 21.5), ("c10-original", 21.9)):
            write_run(results, "ablation", row, seed, [err + 1, err + seed / 10], profile="mini")
    assert report.main(["ablation", "--results", str(results), "--out", str(out), "--no-progress"]) == 0
    return out / "index.html"


def test_the_page_holds_tables_claims_definitions_runs_and_what_is_missing(page):
    html = page.read_text()
    assert "<table" in html and "Fashion-MNIST proxy" in html
    assert "on this proxy: orthogonality lowers the error of SingleShared" in html  # the claims
    assert "Holm" in html and "Definitions" in html
    assert html.count("data:image/png;base64,") >= 1  # figures embedded: nothing to fetch at view time
    assert not re.search(r'(src|href)="https?://', html)  # no network at view time
    assert "resnet20-s16u1-mini-seed2" in html  # what was run, run by run
    assert "python -m replicate.run ablation --rows" in html  # what is missing, and the command for it


@needs_chromium
def test_the_page_renders_in_headless_chromium(page, tmp_path):
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<table") >= 2 and "<img" in dom.stdout
    shot = tmp_path / "page.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, text=True, timeout=120)
    from PIL import Image

    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert high - low > 100  # not blank: text and figures drawn
