"""The figures CLI: every figure renders (with results, with none), the plotted data are the stored
aggregates, and ``--check`` notices changed results and missing files through the manifest."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_run
from replicate import figures
from replicate.complexity import lookup

FIXED = ("error_vs_complexity", "compression", "gradient_flow", "depth_and_ablation")


RANK = {("resnet34", 0): 22.0, ("resnet34", 1): 23.0, ("s16u2", 0): 21.5, ("s16u2", 1): 22.5, ("s16u2", 2): 23.5}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    for (row, seed), err in RANK.items():
        write_run(root, "rank", row, seed, [40.0, 30.0, err])
    write_run(root, "rank", "s8u1", 0, [50.0, 45.0], profile="smoke")  # never drawn beside the paper
    for row in ("depth-1", "depth-all"):
        write_run(root, "depth", row, 0, [20.0, 9.0, 8.0])
    for row in ("c10-original", "c10-single", "c10-single-ortho", "c10-single-nobn", "c10-single-ortho-nobn"):
        for seed in (0, 1):
            write_run(root, "ablation", row, seed, [30.0, 20.0 + seed], profile="mini",
                      gradstats=row != "c10-original", finished=row != "c10-single-nobn" or seed == 0)
    return root


@pytest.fixture(scope="module")
def rendered(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("figures")
    # training curves of one table only (each figure costs a second or two); the default set is tested below
    assert figures.main(["--results", str(results), "--out", str(out), "--curves", "ablation",
                         "--no-progress"]) == 0
    return out


def _names(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()}


def test_every_figure_is_written_with_results(results, rendered):
    default = [plan.name for plan in figures.plans(figures.Context(results))]
    assert default == [*FIXED, "training_curves_ablation", "training_curves_depth", "training_curves_rank"]
    expected = {*FIXED, "training_curves_ablation"}
    for name in expected:
        for fmt in figures.FORMATS:
            assert (rendered / f"{name}.{fmt}").stat().st_size > 1000, name
    assert "training_curves.png" not in _names(rendered)
    manifest = json.loads((rendered / figures.MANIFEST).read_text())
    assert set(manifest["figures"]) == expected
    assert not [n for n in _names(rendered) if n.endswith(".tmp")]


def test_every_figure_renders_without_results(tmp_path, capsys):
    out = tmp_path / "figs"
    assert figures.main(["--results", str(tmp_path / "none"), "--out", str(out), "--no-progress"]) == 0
    for name in (*FIXED, "training_curves"):
        for fmt in figures.FORMATS:
            assert (out / f"{name}.{fmt}").stat().st_size > 1000
    ctx = figures.Context(tmp_path / "none")
    assert "placeholder" in figures.prepare_gradient_flow(ctx).data
    assert figures.prepare_error_vs_complexity(ctx).notes  # "no reproduced runs yet"
    assert figures.main(["--results", str(tmp_path / "none"), "--out", str(out), "--check"]) == 0


def test_reproduced_points_are_the_seed_aggregates(results):
    points = figures.complexity_frame(figures.Context(results))
    ours = points[points.source == "ours"]
    assert set(ours.model) == {"ResNet34", "ResNet34-S16U2"}  # the smoke run is not comparable
    assert set(ours.setting) == {"full profile, paper protocol"}
    s16u2 = ours[ours.model == "ResNet34-S16U2"].iloc[0]
    values = [RANK[("s16u2", s)] for s in range(3)]
    assert s16u2.err == pytest.approx(np.mean(values))
    assert s16u2.err_std == pytest.approx(np.std(values, ddof=1))
    assert s16u2.n == 3 and s16u2.series == "ResNet34-S16Uu"
    assert s16u2.flops_G == pytest.approx(2 * lookup("ResNet34-S16U2", "cifar100").macs / 1e9)
    published = points[(points.source == "published") & (points.model == "ResNet34-S16U1")]
    assert set(published.series) == {"ResNet34-S16Uu", "ResNet34-SsU1"} and set(published.err) == {22.64}

    pairs = figures.compression_frame(figures.Context(results))
    ours = pairs[pairs.source == "ours"].iloc[0]
    assert ours.delta_err == pytest.approx(np.mean(values) - np.mean([22.0, 23.0]))
    saved = 1 - lookup("ResNet34-S16U2", "cifar100").params / lookup("ResNet34", "cifar100").params
    assert ours.saved_pct == pytest.approx(100 * saved)
    assert len(pairs[(pairs.source == "published") & (pairs.table == "rank")]) == 12


def test_gradient_flow_falls_back_to_the_ablation_runs(results, tmp_path):
    name, setting, data, model, runs = figures.gradient_source(figures.Context(results))
    assert (name, setting, data, model) == ("ablation", ("mini", "clean"), "fashion-mnist", "ResNet20-S16U1")
    frame = figures.gradient_frame(runs, figures.Context(results).inputs())
    assert set(frame.condition) == set(figures.CONDITIONS) and set(frame.basis) == {"stage1", "stage2", "stage3"}
    write_run(tmp_path, "gradnorm", "ortho-bn", 0, [30.0, 20.0], profile="smoke", gradstats=True)
    assert figures.gradient_source(figures.Context(tmp_path))[0] == "gradnorm"


def test_check_follows_results_and_files(results, rendered, capsys):
    args = ["--results", str(results), "--out", str(rendered), "--curves", "ablation", "--check"]
    assert figures.main(args) == 0
    result = next((results / "rank").glob("resnet34-full-seed0-*/result.json"))
    original = result.read_text()
    try:
        changed = json.loads(original)
        changed["selected"]["top1_err"] = 25.0
        result.write_text(json.dumps(changed))
        capsys.readouterr()
        assert figures.main(args) == 1
        stale = capsys.readouterr().err.splitlines()
        assert any("error_vs_complexity" in line for line in stale)
        assert any("compression" in line for line in stale)
        assert not any("gradient_flow" in line for line in stale)  # drawn from other runs
    finally:
        result.write_text(original)
    assert figures.main(args) == 0
    pdf = rendered / "gradient_flow.pdf"
    content = pdf.read_bytes()
    pdf.unlink()
    try:
        capsys.readouterr()
        assert figures.main(args) == 1
        assert "gradient_flow" in capsys.readouterr().err
    finally:
        pdf.write_bytes(content)


def test_a_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert figures.main(["--results", str(tmp_path), "--out", str(tmp_path / "file"), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith("error: --out")
    assert figures.main(["--results", str(tmp_path), "--curves", "nosuchtable", "--check"]) == 2
    capsys.readouterr()
    broken = write_run(tmp_path / "results", "rank", "resnet18", 0, [30.0]) / "result.json"
    broken.write_text("{not json")
    assert figures.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "f"), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and str(broken) in error and len(error.splitlines()) == 1
