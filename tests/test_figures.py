"""The figures: every figure renders (with results, with none), the plotted data are the stored aggregates,
``--check`` notices changed results, missing files and changed drawing code through the manifest, and nothing
is silently wrong or destroyed (missing results folder, corrupt result, figures of an earlier run)."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import write_run
from replicate import figures
from replicate import spec as specs
from replicate.config import Setting
from replicate.complexity import lookup
from replicate.figures import (ablation, compression, error_vs_complexity, gradient_flow, sharing_depth, style,
                               training_curves)
from replicate.figures.__main__ import main
from replicate.figures.inputs import Context
from replicate.models import ModelSpec

FIXED = tuple(figures.FIGURES)
RANK = {("resnet34", 0): 22.0, ("resnet34", 1): 23.0, ("s16u2", 0): 21.5, ("s16u2", 1): 22.5, ("s16u2", 2): 23.5}
DEPTH = {("depth-1", 0): 7.0, ("depth-1", 1): 7.4, ("depth-all", 0): 7.2, ("depth-all", 1): 7.8}
GRADIENT_ROWS = ("c10-single", "c10-single-ortho", "c10-single-nobn", "c10-single-ortho-nobn")


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    for (row, seed), err in RANK.items():
        write_run(root, "rank", row, seed, [40.0, 30.0, err])
    write_run(root, "rank", "s8u1", 0, [50.0, 45.0], profile="smoke")  # never drawn beside the paper
    for (row, seed), err in DEPTH.items():
        write_run(root, "depth", row, seed, [20.0, 9.0, err])
    for row in ("c10-original", *GRADIENT_ROWS):
        for seed in (0, 1):
            write_run(root, "ablation", row, seed, [30.0, 20.0 + seed], profile="mini",
                      gradstats=row != "c10-original", finished=row != "c10-single-nobn" or seed == 0)
    corrupt = write_run(root, "table1", "resnet32", 0, [30.0]) / "result.json"
    corrupt.write_text("{not json")
    return root


@pytest.fixture(scope="module")
def rendered(results, tmp_path_factory) -> tuple[Path, str, str]:
    out = tmp_path_factory.mktemp("figures")
    # training curves of one table only (each figure costs a second or two); the default set is tested below
    code, stdout, stderr = _run(["--results", str(results), "--out", str(out), "--curves", "ablation",
                                 "--no-progress"])
    assert code == 0, stderr
    return out, stdout, stderr


@pytest.fixture(scope="module")
def empty(tmp_path_factory) -> tuple[Path, Path, str]:
    results = tmp_path_factory.mktemp("empty-results")
    out = tmp_path_factory.mktemp("empty-figures")
    code, _, stderr = _run(["--results", str(results), "--out", str(out), "--no-progress"])
    assert code == 0, stderr
    return results, out, stderr


def test_the_registry_is_the_spec_vocabulary():
    assert tuple(figures.FIGURES) == specs.FIGURES
    for name, module in figures.FIGURES.items():  # found by name: each module is the figure it is called
        assert module.NAME == name and callable(module.prepare) and callable(module.draw)
    named = {name for table in specs.available() for name in specs.load(table).figures}
    assert named == set(specs.FIGURES)  # every figure is fed by a shipped spec


def test_every_figure_is_written_with_results(results, rendered):
    out, stdout, _ = rendered
    default = [job.name for job in figures.figure_jobs(Context(results))]
    assert default == [*FIXED, "training_curves_ablation", "training_curves_depth", "training_curves_rank",
                       "training_curves_table1"]
    expected = {*FIXED, "training_curves_ablation"}
    for name in expected:
        for fmt in figures.FORMATS:
            assert (out / f"{name}.{fmt}").stat().st_size > 1000, name
    manifest = json.loads((out / figures.MANIFEST).read_text())["figures"]
    assert set(manifest) == expected
    assert all(len(entry["inputs"]) == len(entry["code"]) == 64 for entry in manifest.values())
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert stdout.splitlines()[0] == f"wrote {2 * len(expected) + 1} files to {out}"
    assert f"  {out / 'ablation.png'}" in stdout.splitlines()


def test_a_corrupt_result_is_one_warning_and_treated_as_not_run(results, rendered):
    _, _, stderr = rendered
    broken = next((results / "table1").glob("*/result.json"))
    lines = [line for line in stderr.splitlines() if str(broken) in line]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "not run" in lines[0]
    assert "Traceback" not in stderr and "no finished runs" not in stderr
    pairs = compression.prepare(Context(results)).data["points"]
    assert not ((pairs.table == "table1") & (pairs.source == "ours")).any()


def test_every_figure_renders_without_results(empty):
    results, out, stderr = empty
    for name in (*FIXED, "training_curves"):
        for fmt in figures.FORMATS:
            assert (out / f"{name}.{fmt}").stat().st_size > 1000
    assert stderr.startswith("note: ") and "no finished runs" in stderr and len(stderr.splitlines()) == 1
    ctx = Context(results)
    assert "placeholder" in gradient_flow.prepare(ctx).data
    assert error_vs_complexity.prepare(ctx).notes  # "no reproduced points yet"
    assert figures.check(results, out) == []


def test_a_missing_results_folder_is_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "figs"
    code, _, stderr = _run(["--results", str(tmp_path / "none"), "--out", str(out), "--no-progress"])
    assert code == 2 and stderr.startswith("error: --results") and len(stderr.splitlines()) == 1
    assert not out.exists()
    code, _, stderr = _run(["--results", str(tmp_path / "none"), "--out", str(out), "--check"])
    assert code == 2 and not out.exists()


def test_other_user_errors_are_one_line_and_exit_2(results, tmp_path):
    (tmp_path / "file").write_text("")
    code, _, stderr = _run(["--results", str(results), "--out", str(tmp_path / "file"), "--no-progress"])
    assert code == 2 and stderr.startswith("error: --out")
    code, _, stderr = _run(["--results", str(results), "--out", str(tmp_path / "f"), "--curves", "nosuchtable"])
    assert code == 2 and stderr.startswith("error: unknown table") and not (tmp_path / "f").exists()


def test_a_file_where_a_tables_folder_goes_is_refused_and_nothing_is_drawn(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "ablation").write_text("")
    out = tmp_path / "figs"
    for extra in ([], ["--check"], ["--curves", "table1"]):
        code, _, stderr = _run(["--results", str(tmp_path / "store"), "--out", str(out), "--no-progress", *extra])
        assert code == 2 and len(stderr.splitlines()) == 1
        assert stderr.startswith(f"error: {tmp_path / 'store' / 'ablation'} is a file, not a folder")
        assert not out.exists()


def test_an_unwritable_out_is_refused_before_drawing(results, tmp_path):
    from test_cli import _unwritable_outs

    for out in _unwritable_outs(tmp_path):
        code, stdout, stderr = _run(["--results", str(results), "--out", str(out), "--no-progress"])
        assert code == 2 and len(stderr.splitlines()) == 1 and stderr.startswith(f"error: --out {out}")
        assert stdout == "" and not out.exists()


def test_reproduced_points_are_the_seed_aggregates(results):
    points = error_vs_complexity.prepare(Context(results)).data["points"]
    ours = points[points.source == "ours"]
    assert set(ours.model) == {"ResNet34", "ResNet34-S16U2"}  # the smoke run is not comparable
    assert set(ours.setting) == {Setting("full", "paper").label}
    s16u2 = ours[ours.model == "ResNet34-S16U2"].iloc[0]
    values = [RANK[("s16u2", s)] for s in range(3)]
    assert s16u2.err == pytest.approx(np.mean(values))
    assert s16u2.err_std == pytest.approx(np.std(values, ddof=1))
    assert s16u2.n == 3 and s16u2.series == "ResNet34-S16Uu"
    assert s16u2.flops_G == pytest.approx(2 * lookup(ModelSpec("ResNet34-S16U2", "cifar100")).macs / 1e9)
    published = points[(points.source == "published") & (points.model == "ResNet34-S16U1")]
    assert set(published.series) == {"ResNet34-S16Uu", "ResNet34-SsU1"} and set(published.err) == {22.64}
    assert set(points.series) == {"original ResNet", "ResNet34-S16Uu", "ResNet34-S32Uu", "ResNet34-SsU1"}
    assert points.citation[points.source == "published"].str.startswith("authors' README graph at").all()

    pairs = compression.prepare(Context(results)).data["points"]
    ours = pairs[pairs.source == "ours"]
    assert len(ours) == 1
    assert ours.delta_err.iloc[0] == pytest.approx(np.mean(values) - np.mean([22.0, 23.0]))
    assert ours.delta_std.iloc[0] == pytest.approx(np.hypot(np.std(values, ddof=1), np.std([22.0, 23.0], ddof=1)))
    params = {name: lookup(ModelSpec(name, "cifar100")).params for name in ("ResNet34-S16U2", "ResNet34")}
    saved = 1 - params["ResNet34-S16U2"] / params["ResNet34"]
    assert ours.saved_pct.iloc[0] == pytest.approx(100 * saved)
    assert len(pairs[(pairs.source == "published") & (pairs.table == "rank")]) == 12


def _store_released_s32u1(results):
    """The rank table's ResNet34-S32U1 released checkpoint, as re-evaluated (top-1 error 21.85 %), in ``results``."""
    from replicate.evaluate import released_result
    from replicate.results import RunFolder

    table = specs.load("rank")
    row = next(r for r in table.rows if r.id == "s32u1")
    record = {"data": "test", "stored_epoch": 280, "top1_err": 21.85, "top5_err": 5.9, "seconds": 9.0,
              "checkpoint": "x.pth", "sha256": "ab" * 32, "stored_top1_err": 21.79, "device": "cpu",
              "batch_size": 256}
    result = released_result(table, row, record)
    RunFolder(results / "rank" / result.run_id).write_result(result)


def test_released_checkpoints_re_evaluated_are_drawn_beside_the_published_points(tmp_path):
    _store_released_s32u1(tmp_path)
    points = error_vs_complexity.prepare(Context(tmp_path)).data["points"]
    released = points[points.source == "released"]
    assert set(released.model) == {"ResNet34-S32U1"} and set(released.err) == {21.85}
    assert set(released.series) == {"ResNet34-S32Uu", "ResNet34-SsU1"}


def test_sharing_depth_and_ablation_are_the_seed_aggregates(results):
    depth = sharing_depth.prepare(Context(results)).data["points"]
    ours = depth[depth.source == "ours"].set_index("row")
    for row in ("depth-1", "depth-all"):
        values = [DEPTH[(row, s)] for s in (0, 1)]
        assert ours.loc[row, "err"] == pytest.approx(np.mean(values))
        assert ours.loc[row, "err_std"] == pytest.approx(np.std(values, ddof=1))
    assert ours.loc["depth-1", "depth_label"] == "depth 1" and ours.loc["depth-all", "depth_label"] == "whole stage"
    assert sharing_depth.blocks_per_basis(ModelSpec("ResNet56-S16U1", "cifar10")) == 8  # 8 decomposed blocks
    assert sharing_depth.blocks_per_basis(ModelSpec("ResNet56-S16U1", "cifar10", 1)) == 1
    assert set(depth[depth.source == "published"].row) == {"depth-all"}  # published only beside a comparable run

    points = ablation.prepare(Context(results)).data["points"].set_index("variant")
    rows = {row.id: row for row in specs.load("ablation").rows}
    assert ablation.variant(rows["c10-single-ortho-nobn"]) == "single shared + orthogonality, no unshared BN"
    assert ablation.variant(rows["c10-original"]) == "original"
    assert len({ablation.variant(r) for r in rows.values() if r.dataset == "cifar10"}) == 11
    single = points.loc[ablation.variant(rows["c10-single-ortho"])]
    assert single.err == pytest.approx(20.5) and single.err_std == pytest.approx(np.std([20, 21], ddof=1))
    assert single.n == 2
    assert points.loc[ablation.variant(rows["c10-single-nobn"])].n == 1  # the second seed has not finished
    assert points.published.isna().all()  # mini runs are never set beside the paper
    # the panel names what was trained, the paper's rows only as what it stands for
    assert set(points.panel) == {"Fashion-MNIST proxy: ResNet20"} and set(points.paper_rows) == {"CIFAR-10 ResNet56"}


def _drawn(fig, kind: str) -> dict[str, list[float]]:
    """x values of the artists of one kind (gid "kind|variant|setting"), read back from the figure."""
    found = {}
    for ax in fig.axes:
        for artist in [*ax.lines, *ax.collections]:
            gid = artist.get_gid() or ""
            if gid.startswith(kind + "|"):
                xs = artist.get_xdata() if hasattr(artist, "get_xdata") else artist.get_offsets()[:, 0]
                found[gid.split("|")[1]] = [float(x) for x in xs]
    return found


def test_the_ablation_draws_the_results_values(results):
    """What is drawn equals the results: each seed, each mean, and an interval only from 3 seeds."""
    import matplotlib as mpl

    prepared = ablation.prepare(Context(results))
    points = prepared.data["points"].set_index("variant")
    with mpl.rc_context(style.rc()):
        fig = ablation.draw(prepared)
    means, seeds, intervals = _drawn(fig, "mean"), _drawn(fig, "seeds"), _drawn(fig, "interval")
    assert set(means) == set(points.index)
    for variant, point in points.iterrows():
        assert means[variant] == pytest.approx([point.err])
        assert sorted(seeds[variant]) == pytest.approx(sorted(point["values"]))
    assert not intervals  # two seeds at most in the fixture: no interval bar
    titles = [ax.get_title() for ax in fig.axes]
    assert "Fashion-MNIST proxy: ResNet20 (paper rows: CIFAR-10 ResNet56)" in titles


def test_error_vs_complexity_draws_the_results_values(results):
    import matplotlib as mpl

    prepared = error_vs_complexity.prepare(Context(results))
    points = prepared.data["points"]
    with mpl.rc_context(style.rc()):
        fig = error_vs_complexity.draw(prepared)
    drawn = {}
    for ax in fig.axes:
        for line in ax.lines:
            if line.get_gid():
                drawn[line.get_gid()] = sorted(zip(line.get_xdata(), line.get_ydata()))
    for source in ("ours", "published"):
        for (series, ), mine in points[points.source == source].groupby(["series"]):
            for column in ("params_M", "flops_G"):
                expected = sorted(zip(mine[column], mine.err))
                assert drawn[f"{source}|{series}|{column}"] == pytest.approx(expected)


def test_paper_figures_are_a_column_wide_with_captions_beside_them(results, tmp_path):
    from PIL import Image

    out = tmp_path / "paper"
    code, stdout, stderr = _run(["--results", str(results), "--out", str(out), "--style", "paper",
                                 "--no-progress"])
    assert code == 0, stderr
    drawn = sorted(p.stem for p in out.glob("*.png"))
    assert drawn and all((out / f"{name}.caption.md").is_file() for name in drawn)
    for name in drawn:
        width, _ = Image.open(out / f"{name}.png").size
        assert width == pytest.approx(3.25 * style.DPI, abs=2)  # one column at print size
    caption = (out / "ablation.caption.md").read_text()
    assert caption.startswith("**Ablation") and "stands for the paper's rows CIFAR-10 ResNet56" in caption
    assert "not in this profile" in caption  # what the figure lacks, said
    # no placeholder frame in the paper set: a figure without data is said on stdout, not drawn
    assert "not drawn for the paper: Training curves: Table 1" in stdout
    assert not (out / "training_curves_table1.png").exists()


def test_gradient_flow_falls_back_to_the_ablation_runs(results, tmp_path):
    ctx = Context(results)
    table, setting, chosen = gradient_flow.source(ctx, ctx.inputs())
    assert table.name == "ablation" and setting == Setting("mini", "clean")
    assert {result.row.id for result, _ in chosen} == set(GRADIENT_ROWS)
    assert {result.model.name for result, _ in chosen} == {"ResNet20-S16U1"}
    frame = gradient_flow.frame(chosen)
    assert set(frame.condition) == set(gradient_flow.CONDITIONS)
    assert set(frame.basis) == {"stage1", "stage2", "stage3"}
    prepared = gradient_flow.prepare(ctx)
    assert any("gradnorm" in note for note in prepared.notes)  # says the preferred table has no runs yet
    write_run(tmp_path, "gradnorm", "ortho-bn", 0, [30.0, 20.0], profile="smoke", gradstats=True)
    assert gradient_flow.source(Context(tmp_path), Context(tmp_path).inputs())[0].name == "gradnorm"


def test_check_follows_results_files_and_code(results, rendered, monkeypatch, tmp_path):
    out = rendered[0]
    args = ["--results", str(results), "--out", str(out), "--curves", "ablation", "--check"]
    assert _run(args)[0] == 0
    result = next((results / "rank").glob("resnet34-full-seed0-*/result.json"))
    original = result.read_text()
    try:
        changed = json.loads(original)
        changed["selected"]["top1_err"] = 25.0
        result.write_text(json.dumps(changed))
        code, _, stderr = _run(args)
        assert code == 1
        assert any("error_vs_complexity" in line for line in stderr.splitlines())
        assert any("compression" in line for line in stderr.splitlines())
        assert "gradient_flow" not in stderr  # drawn from other runs
    finally:
        result.write_text(original)
    assert _run(args)[0] == 0

    pdf = out / "gradient_flow.pdf"
    content = pdf.read_bytes()
    pdf.unlink()
    try:
        code, _, stderr = _run(args)
        assert code == 1 and "gradient_flow: missing gradient_flow.pdf" in stderr
    finally:
        pdf.write_bytes(content)

    edited = tmp_path / "ablation.py"  # the ablation's drawing changes: only that figure is stale
    edited.write_bytes(Path(ablation.__file__).read_bytes() + b"\n# a changed drawing\n")
    monkeypatch.setattr(ablation, "__file__", str(edited))
    code, _, stderr = _run(args)
    stale = [line for line in stderr.splitlines() if line.startswith("stale: ")]
    assert code == 1 and stale == [f"stale: {out / 'ablation'}: its drawing code changed since it was drawn"]


def test_earlier_figures_stay_unless_pruned(results, tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "FIGURES", {})  # the fixed figures are rendered above: curves only, to be quick
    out = tmp_path / "figs"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # never the figures' to remove
    base = ["--results", str(results), "--out", str(out), "--no-progress"]
    assert _run([*base, "--curves", "depth"])[0] == 0
    earlier = [out / "training_curves_depth.png", out / "training_curves_depth.pdf"]
    content = earlier[0].read_bytes()

    code, stdout, _ = _run([*base, "--curves", "rank"])  # the depth curves are not drawn this time
    assert code == 0 and all(p.is_file() for p in earlier) and earlier[0].read_bytes() == content
    manifest = json.loads((out / figures.MANIFEST).read_text())["figures"]
    assert set(manifest) == {"training_curves_depth", "training_curves_rank"}
    assert "removed" not in stdout

    code, stdout, _ = _run([*base, "--curves", "rank", "--prune"])
    assert code == 0 and not any(p.exists() for p in earlier)
    assert [line for line in stdout.splitlines() if line.startswith("removed ")] == [f"removed {p}" for p in earlier]
    assert set(json.loads((out / figures.MANIFEST).read_text())["figures"]) == {"training_curves_rank"}
    assert (out / "notes.txt").read_text() == "mine" and (out / "training_curves_rank.png").is_file()


def test_training_curves_of_a_table_without_the_orthogonality_term(tmp_path):
    """No finished row trains with R (only the original networks ran): the R panel is a placeholder and the
    figure is drawn, with its manifest (no tick-locator error, no half-written folder)."""
    results = tmp_path / "results"
    for seed in (0, 1):
        write_run(results, "table1", "resnet56", seed, [30.0, 20.0 + seed], profile="smoke")
    code, _, stderr = _run(["--results", str(results), "--out", str(tmp_path / "f"), "--curves", "table1",
                            "--no-progress"])
    assert code == 0, stderr
    assert (tmp_path / "f" / "training_curves_table1.png").is_file() and (tmp_path / "f" / "manifest.json").is_file()


# -- every figure's drawn values read back from its Axes and compared with the results they were drawn from ----
def _draw(module, ctx: Context, *args):
    import matplotlib as mpl

    with mpl.rc_context(style.rc()):
        return module.draw(module.prepare(ctx, *args))


def _errorbars_of(container) -> list[tuple[float, float, float]]:
    """(x, y, half height of its bar) of each point of a drawn errorbar (a vertical bar centred on the point)."""
    data, _, bars = container.lines
    points = []
    for (x, y), ((x0, low), (x1, high)) in zip(data.get_xydata(), bars[0].get_segments()):
        assert x0 == x1 == x and high - y == pytest.approx(y - low)
        points.append((float(x), float(y), float(high - y)))
    return sorted(points)


def _errorbars(ax) -> list[tuple[float, float, float]]:
    """Every errorbar point of an Axes."""
    return sorted(point for container in ax.containers for point in _errorbars_of(container))


def _hollow(ax) -> list[tuple[float, float]]:
    """The points of every scatter of an Axes (the hollow published markers), from the drawn collections."""
    from matplotlib.collections import PathCollection

    return sorted((float(x), float(y)) for c in ax.collections if isinstance(c, PathCollection)
                  for x, y in c.get_offsets())


def _approx(rows):
    """pytest.approx for a list of tuples of numbers (which it compares exactly, element by element, otherwise)."""
    return pytest.approx(np.array(rows, dtype=float))


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1))


def test_compression_draws_the_seed_means_their_spread_and_the_published_pairs(results):
    fig = _draw(compression, Context(results))
    (ax,) = fig.axes
    s16u2, resnet34 = ([RANK[(row, s)] for s in range(n)] for row, n in (("s16u2", 3), ("resnet34", 2)))
    params = {name: lookup(ModelSpec(name, "cifar100")).params for name in ("ResNet34-S16U2", "ResNet34")}
    assert _errorbars(ax) == _approx([(100 * (1 - params["ResNet34-S16U2"] / params["ResNet34"]),
                                       np.mean(s16u2) - np.mean(resnet34),
                                       np.hypot(np.std(s16u2, ddof=1), np.std(resnet34, ddof=1)))])
    published = []
    for table in [specs.load(name) for name in specs.available() if "compression" in specs.load(name).figures]:
        for row, base in compression.pairs(table):
            if row.published and base.published and None not in (row.published.top1_err, base.published.top1_err):
                saved = 100 * (1 - lookup(row.model).params / lookup(base.model).params)
                published.append((saved, row.published.top1_err - base.published.top1_err))
    assert len(published) >= 12 and _hollow(ax) == _approx(sorted(published))


def test_sharing_depth_draws_blocks_per_basis_against_the_seed_means(results):
    fig = _draw(sharing_depth, Context(results))
    (ax,) = fig.axes
    blocks = {"depth-1": 1, "depth-all": 8}  # ResNet56's stage: 8 decomposed blocks, one basis or eight
    expected = [(blocks[row], *_mean_std([DEPTH[(row, s)] for s in (0, 1)])) for row in blocks]
    assert _errorbars(ax) == _approx(sorted(expected))
    (depth_all,) = [row for row in specs.load("depth").rows if row.id == "depth-all"]
    assert _hollow(ax) == _approx([(8, depth_all.published.top1_err)])  # beside its comparable run only
    assert [float(t) for t in ax.get_xticks()] == [1.0, 8.0]


def test_gradient_flow_draws_each_conditions_logged_statistics(results):
    """Per basis and statistic, each condition's curve is the logged values (mean over seeds) at their step in
    epochs; the moving average is over one logged step here (4 steps), so it lies on them too."""
    import math

    from replicate import plan
    from replicate.config import PROFILES

    fig = _draw(gradient_flow, Context(results))
    ablation_rows = {row.id: row for row in specs.load("ablation").rows}
    config = plan.run_config(ablation_rows["c10-single"], PROFILES["mini"], 0, None, None)
    batches = math.ceil(plan.image_counts(config)[0] / config.recipe.batch_size)
    steps = [e - 1 + b / batches for e in (1, 2) for b in (0, 5)]  # what write_run logs: epochs 1-2, batches 0, 5
    legend = {(h.get_color(), h.get_linestyle()): h.get_label() for h in fig.legends[0].legend_handles
              if h.get_label() in gradient_flow.CONDITIONS}
    expected_conditions = {gradient_flow.condition(row.training.orthogonality, row.model.unshared_bn): row
                           for row in (ablation_rows[r] for r in GRADIENT_ROWS)}
    assert set(legend.values()) == set(expected_conditions)
    panels = {}
    for ax in fig.axes:
        if ax.get_visible() and ax.lines:
            panels.setdefault(ax.get_subplotspec().colspan.start, []).append(ax)
    bases = {column: axes[0].get_title() for column, axes in panels.items()}
    assert sorted(bases.values()) == ["stage1", "stage2", "stage3"]
    for column, (mean_ax, max_ax) in panels.items():
        k = int(bases[column][-1])
        for ax, statistic in ((mean_ax, "mean_abs"), (max_ax, "max_abs")):
            faint = sorted(tuple(map(tuple, line.get_xydata())) for line in ax.lines if line.get_alpha() == 0.3)
            curves = {legend[(line.get_color(), line.get_linestyle())]: line.get_xydata() for line in ax.lines
                      if line.get_alpha() is None}
            assert set(curves) == set(expected_conditions)
            wanted = {}
            for name, row in expected_conditions.items():
                scale = 1e-3 * (2 - row.training.orthogonality)  # write_run's gradient statistics
                value = {"mean_abs": lambda e: scale * (k + e), "max_abs": lambda e: 1e-2 * (k + e)}[statistic]
                wanted[name] = [(step, value(int(step) + 1)) for step in steps]
                assert curves[name] == pytest.approx(np.array(wanted[name])), (bases[column], statistic, name)
            assert [np.array(line) for line in faint] == [_approx(w) for w in sorted(wanted.values())]


def test_training_curves_draw_each_rows_mean_band_and_orthogonality_term(results):
    """Each panel: its row's mean error per epoch over the finished seeds, a band of ± 1 std with two, the
    other rows of its dataset in grey; the bottom panel the orthogonality term of the rows that train with it."""
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgba

    fig = _draw(training_curves, Context(results), "ablation")
    errors = {seed: [30.0, 20.0 + seed] for seed in (0, 1)}  # what the fixture wrote for each ablation run
    seeds = {row: (0,) if row == "c10-single-nobn" else (0, 1) for row in ("c10-original", *GRADIENT_ROWS)}
    means = {row: np.mean([errors[s] for s in chosen], axis=0) for row, chosen in seeds.items()}
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title() in seeds}
    assert set(panels) == set(seeds)
    for row, ax in panels.items():
        grey = [line for line in ax.lines if to_rgba(line.get_color()) == to_rgba("0.85")]
        (mine,) = [line for line in ax.lines if line not in grey]
        assert mine.get_xydata() == pytest.approx(np.array([[1, means[row][0]], [2, means[row][1]]]))
        assert sorted(tuple(line.get_ydata()) for line in grey) == _approx(
            sorted(tuple(means[other]) for other in seeds if other != row))
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        if len(seeds[row]) == 1:
            assert not bands  # one seed: no band
        else:
            (band,) = bands
            std = np.std([errors[s] for s in seeds[row]], axis=0, ddof=1)
            vertices = band.get_paths()[0].vertices
            for epoch in (1, 2):
                ys = vertices[np.isclose(vertices[:, 0], epoch), 1]
                assert (ys.min(), ys.max()) == pytest.approx((means[row][epoch - 1] - std[epoch - 1],
                                                              means[row][epoch - 1] + std[epoch - 1]))
        assert [t.get_text() for t in ax.texts] == [f"{means[row][-1]:.1f}"]
    (term,) = [ax for ax in fig.axes if ax.get_ylabel().startswith("orthogonality")]
    rows = {row.id: row for row in specs.load("ablation").rows}
    drawn = {line.get_label(): line.get_xydata() for line in term.lines}
    assert set(drawn) == {row for row in seeds if rows[row].training.orthogonality}
    for line in drawn.values():  # write_run's term: 0.5 / epoch, the same for every seed
        assert line == pytest.approx(np.array([[1, 0.5], [2, 0.25]]))


def test_the_ablation_draws_a_t_interval_from_three_seeds(tmp_path):
    from scipy import stats as scipy_stats

    errors = {0: 20.0, 1: 21.0, 2: 23.5}
    for seed, err in errors.items():
        write_run(tmp_path, "ablation", "c10-single-ortho", seed, [30.0, err], profile="mini")
    fig = _draw(ablation, Context(tmp_path))
    rows = {row.id: row for row in specs.load("ablation").rows}
    variant = ablation.variant(rows["c10-single-ortho"])
    (interval,) = _drawn(fig, "interval").items()
    mean, std = _mean_std(list(errors.values()))
    half = scipy_stats.t.ppf(0.975, 2) * std / np.sqrt(3)
    assert interval[0] == variant and interval[1] == pytest.approx([mean - half, mean + half])
    assert _drawn(fig, "mean") == {variant: pytest.approx([mean])}
    assert sorted(_drawn(fig, "seeds")[variant]) == pytest.approx(sorted(errors.values()))


def test_error_vs_complexity_draws_the_seed_means_with_their_std_and_the_released_points(results, tmp_path):
    fig = _draw(error_vs_complexity, Context(results))
    ours = {}
    for ax in fig.axes:
        for container in ax.containers:
            gid = container.lines[0].get_gid()
            ours[gid] = _errorbars_of(container)
    s16u2, resnet34 = ([RANK[(row, s)] for s in range(n)] for row, n in (("s16u2", 3), ("resnet34", 2)))
    sizes = {name: lookup(ModelSpec(name, "cifar100")) for name in ("ResNet34-S16U2", "ResNet34")}
    for name, values in (("ResNet34-S16U2", s16u2), ("ResNet34", resnet34)):
        series = "ResNet34-S16Uu" if name != "ResNet34" else "original ResNet"
        for column, x in (("params_M", sizes[name].params / 1e6), ("flops_G", 2 * sizes[name].macs / 1e9)):
            assert ours[f"ours|{series}|{column}"] == _approx([(x, *_mean_std(values))])

    _store_released_s32u1(tmp_path)
    fig = _draw(error_vs_complexity, Context(tmp_path))
    size = lookup(ModelSpec("ResNet34-S32U1", "cifar100"))
    for ax, x in zip(fig.axes, (size.params / 1e6, 2 * size.macs / 1e9)):
        crosses = [tuple(p) for c in ax.collections for p in c.get_offsets()]
        # one cross per series the model is in (ResNet34-S32Uu and ResNet34-SsU1)
        assert crosses == _approx([(x, 21.85), (x, 21.85)])
