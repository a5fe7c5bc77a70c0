"""Tables regenerated from fixture results: aggregates, intervals, verdicts, claims, and rows never mixed."""
import pandas as pd
from scipy import stats as sps
import pytest

from conftest import write_run
from replicate import tables


def _csv(out, name):
    return pd.read_csv(out / f"{name}.csv", keep_default_na=False).set_index("row")


def test_table_numbers_equal_the_fixture_aggregates(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed, (base, double) in enumerate([(7.0, 6.3), (7.4, 6.4), (7.2, 6.5)]):
        write_run(results, "table1", "resnet56", seed, [base + 1, base])
        write_run(results, "table1", "resnet56-s16u1-double", seed, [double + 1, double])
    assert tables.main(["table1", "--results", str(results), "--out", str(out)]) == 0
    frame = _csv(out, "table1")
    assert frame.loc["resnet56", "top1_err"] == "7.20 ± 0.20" and int(frame.loc["resnet56", "n"]) == 3
    double = frame.loc["resnet56-s16u1-double"]
    assert double["top1_err"] == "6.40 ± 0.10" and float(double["top1_err_published"]) == 6.3
    assert double["top1_err_ci"] == "[6.15, 6.65]"  # 6.40 ± t(0.975, 2) 4.303 x 0.1 / sqrt(3)
    # the whole interval lies within 0.5 points of 6.30; the 0.31M is flagged (rounding)
    assert float(double["difference"]) == 0.1 and double["verdict"] == "flagged (within tolerance)"
    assert float(double["params_M"]) == 0.319 and double["params_published"] == "0.31M"
    assert float(double["flops_G"]) == 0.296 and double["flops_published"] == "0.30G"
    assert frame.loc["resnet32-s8u1", "verdict"] == "not run"
    markdown = (out / "table1.md").read_text()
    # paired by seed: differences -0.7, -1.0, -0.7 -> -0.80 with t(2) interval [-1.23, -0.37]
    assert ("**holds** — CIFAR-10: ResNet56-S16U1* saves 62.6% of ResNet56's parameters and its error is lower. "
            "top-1 error % (selected epoch): resnet56-s16u1-double (ResNet56-S16U1*) 6.40 vs resnet56 (ResNet56) 7.20; "
            "difference −0.80 points [−1.23, −0.37] (95 % CI, paired by seed, n=3)") in markdown
    assert "\\begin{table*}" in (out / "table1.tex").read_text() and "\\toprule" in (out / "table1.tex").read_text()


def test_worse_better_inconclusive_and_flagged_rows(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed, delta in enumerate((0.0, 0.1, -0.1)):
        write_run(results, "table2", "resnet34-s32u1", seed, [26.0, 25.0 + delta])
        write_run(results, "table2", "resnext50-s64u4", seed, [20.0, 19.0 + delta])
        write_run(results, "table2", "resnet34-s8u1", seed, [21.0, 20.0 + delta])
    write_run(results, "table2", "resnet34-s16u1", 0, [23.0, 22.6])  # one seed: no interval
    tables.main(["table2", "--results", str(results), "--out", str(out)])
    frame = _csv(out, "table2")
    assert frame.loc["resnet34-s32u1", "verdict"] == "worse"
    assert frame.loc["resnet34-s8u1", "verdict"] == "better"
    assert frame.loc["resnet34-s16u1", "verdict"] == "inconclusive (n=1)"
    assert float(frame.loc["resnet34-s16u1", "difference"]) == pytest.approx(-0.04)
    resnext = frame.loc["resnext50-s64u4"]  # the printed label, with the configuration trained
    assert resnext["paper_row"] == "ResNeXt50-S16U1" and resnext["trained"] == "ResNeXt50-S64U4"
    assert resnext["verdict"] == "flagged (better)" and "label-swap" in resnext["note"]


def test_other_profiles_are_never_compared_with_the_paper(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed, (single, original) in enumerate([(9.0, 9.5), (9.4, 9.8), (9.2, 9.9)]):
        write_run(results, "ablation", "c10-single-ortho", seed, [single + 1, single], profile="mini")
        write_run(results, "ablation", "c10-original", seed, [original + 1, original], profile="mini")
    write_run(results, "ablation", "c10-single", 0, [10.0, 9.6], profile="mini")
    tables.main(["ablation", "--results", str(results), "--out", str(out)])
    paper_setting = pd.read_csv(out / "ablation.csv", keep_default_na=False)  # always shown, here empty
    assert set(paper_setting.verdict) == {"not run"}
    frame = _csv(out, "ablation.mini-clean")
    row = frame.loc["c10-single-ortho"]
    assert row["paper_row"] == "ResNet56-S16U1" and row["trained"] == "ResNet20-S16U1"
    assert row["data"] == "fashion-mnist" and row["verdict"] == "not comparable"
    assert row["top1_err_published"] == row["params_published"] == row["difference"] == ""
    assert "not compared with the paper's 7.46%" in row["note"]
    markdown = (out / "ablation.mini-clean.md").read_text()
    # non-inferiority: paired differences -0.5, -0.4, -0.7, interval [-0.93, -0.14], below the 0.5 margin
    assert "**holds** — on this proxy: the shared basis with orthogonality matches or beats" in markdown
    assert "CIFAR-10:" not in markdown  # a proxy result never reads as a CIFAR-10 claim
    assert "lies below the margin +0.50" in markdown
    assert "**inconclusive** — on this proxy: orthogonality lowers the error of SingleShared" in markdown
    assert "no interval with fewer than 2 seeds per row (n=3 vs 1)" in markdown
    assert "**not run** — on this proxy: orthogonality lowers the error of DoubleShared" in markdown


def test_synthetic_results_never_decide_a_claim(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed in range(3):
        write_run(results, "table1", "resnet56", seed, [90.0, 89.0 + seed], profile="smoke")
        write_run(results, "table1", "resnet56-s16u1-double", seed, [90.0, 80.0 + seed], profile="smoke")
    tables.main(["table1", "--results", str(results), "--out", str(out)])
    markdown = (out / "table1.smoke-paper.md").read_text()
    assert "**not evaluated (synthetic)** — ResNet56-S16U1* saves" in markdown and "**holds**" not in markdown


def test_a_missing_results_folder_is_refused_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert tables.main(["table1", "--results", str(tmp_path / "none"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: results folder") and error.count("\n") == 1 and not out.exists()
    assert tables.main(["nosuchtable", "--results", str(tmp_path), "--out", str(out)]) == 2
    assert "unknown table 'nosuchtable'" in capsys.readouterr().err and not out.exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: t\nrows: [{id: a, model: ResNet21, dataset: cifar10, recipe: cifar10}]\n")
    assert tables.main(["table1", str(bad), "--results", str(tmp_path), "--out", str(out)]) == 2
    assert "6n+2" in capsys.readouterr().err and not out.exists()  # checked before table1 was written


def test_empty_results_render_every_table_as_not_run_and_say_so(tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    assert tables.main(["--results", str(tmp_path / "empty"), "--out", str(out)]) == 0
    for name in ("table1", "table2", "table3", "ablation", "depth", "rank", "gradnorm"):
        frame = pd.read_csv(out / f"{name}.csv", keep_default_na=False)
        assert set(frame.verdict) == {"not run"}
    assert "top5_err_published" in pd.read_csv(out / "table3.csv").columns
    captured = capsys.readouterr()
    assert "note: no results for table1" in captured.err and str(out / "table1.md") in captured.out


@pytest.mark.parametrize("content", ["", "{}", '{"run_id": "x", "config": {'])
def test_a_corrupt_result_is_named_and_counted_as_not_run(tmp_path, capsys, content):
    results, out = tmp_path / "results", tmp_path / "out"
    broken = write_run(results, "table1", "resnet56", 0, [8.0, 7.0]) / "result.json"
    broken.write_text(content)
    assert tables.main(["table1", "--results", str(results), "--out", str(out)]) == 0
    assert f"warning: {broken} is unreadable" in capsys.readouterr().err
    assert _csv(out, "table1").loc["resnet56", "verdict"] == "not run"


def test_table_names_are_case_insensitive_with_a_suggestion(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    assert tables.main(["TABLE1", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "table1.md").is_file()
    assert tables.main(["tabel1", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 2
    assert "did you mean table1?" in capsys.readouterr().err


def test_bf16_runs_are_a_setting_of_their_own_never_mixed_with_float32(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed in range(2):
        write_run(results, "table1", "resnet56", seed, [8.0, 7.0 + seed])
        write_run(results, "table1", "resnet56", seed, [10.0, 9.0 + seed], precision="bf16")
    tables.main(["table1", "--results", str(results), "--out", str(out)])
    assert _csv(out, "table1").loc["resnet56", "top1_err"] == "7.50 ± 0.71"
    assert _csv(out, "table1.full-paper-bf16").loc["resnet56", "top1_err"] == "9.50 ± 0.71"
    assert "(full profile, paper protocol, bf16)" in (out / "table1.full-paper-bf16.md").read_text()


def test_claims_in_another_precision_say_so(tmp_path):
    """The paper's data in bf16 is not the paper's setting: its claims say "in this setting", never bare."""
    results, out = tmp_path / "results", tmp_path / "out"
    for seed in range(2):
        write_run(results, "table1", "resnet56", seed, [10.0, 9.0 + seed], precision="bf16")
        write_run(results, "table1", "resnet56-s16u1-double", seed, [10.0, 8.0 + seed], precision="bf16")
    tables.main(["table1", "--results", str(results), "--out", str(out)])
    lines = _claims(out, "table1.full-paper-bf16")
    assert lines and all("— CIFAR-10, in this setting: " in line for line in lines if "ResNet56-S16U1*" in line)


# -- the words and numbers of claims ---------------------------------------------------------------------------
def _claims(out, name):
    markdown = (out / f"{name}.md").read_text()
    return [line for line in markdown.splitlines() if line.startswith("- **")]


def _mini(results, row, seed, selected, final=None):
    errors = [selected + 1, selected] if final is None else [selected + 1, selected, final]
    write_run(results, "ablation", row, seed, errors, profile="mini")


def test_a_claims_family_is_decided_with_holm(tmp_path):
    """Primary claims are one family: a p-value that decides alone may not survive the adjustment."""
    results, out = tmp_path / "results", tmp_path / "out"
    # single-ortho vs single: differences −0.5, −0.45, −0.6 (paired t = −11.7, 2 df: p = 0.0072 alone); the
    # other primary claims show no effect: Holm multiplies the smallest p by the 4 tested claims, 0.029 < 0.05
    base = [20.0, 20.1, 20.2]  # a small seed effect: unpaired, the claim is decided too (not fragile)
    for seed, delta in enumerate((-0.5, -0.45, -0.6)):
        _mini(results, "c10-single", seed, base[seed])
        _mini(results, "c10-single-ortho", seed, base[seed] + delta)
        _mini(results, "c10-original", seed, base[seed] + delta + (0.1, -0.1, 0.0)[seed])
        _mini(results, "c10-naive-ortho", seed, base[seed] + delta + (0.2, -0.3, 0.1)[seed])
        _mini(results, "c10-double-ortho", seed, base[seed] + delta + (0.3, -0.2, -0.1)[seed])
    tables.main(["ablation", "--results", str(results), "--out", str(out)])
    lines = _claims(out, "ablation.mini-clean")
    ortho = next(line for line in lines if "orthogonality lowers the error of SingleShared" in line)
    assert ortho.startswith("- **holds** — on this proxy:")
    p = sps.ttest_rel([19.5, 19.65, 19.6], [20.0, 20.1, 20.2]).pvalue
    assert f"{4 * p:.3f}" == "0.029" and f"p = {p:.3f}" in ortho
    assert "alone: holds" in ortho and "Holm over the primary family of 4: adjusted p = 0.029, holds" in ortho
    markdown = (out / "ablation.mini-clean.md").read_text()
    assert "Holm" in markdown.split("| row")[0]  # the caption names the adjustment, the family and the level
    assert "2.5 % one-sided" in markdown
    assert "Trained here: Fashion-MNIST proxy: ResNet20 variants, 5 000 training images, 6 epochs" in markdown
    assert "CIFAR-10:" not in markdown and "paper rows: CIFAR-10 ResNet56" in markdown
    for word in ("holds", "inconclusive", "not comparable", "difference", "margin", "Holm", "on this proxy"):
        assert f"- *{word}*: " in markdown  # every word the table uses, defined under it
    claims = pd.read_csv(out / "ablation.mini-clean.claims.csv")
    assert list(claims.family[:4]) == ["primary"] * 4 and claims.p_holm[2] == pytest.approx(4 * p, rel=1e-6)


def test_a_zero_spread_pair_never_decides(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed, single in enumerate((22.10, 23.00)):  # differences exactly 0.50 twice: a zero-width interval
        _mini(results, "c10-single", seed, single)
        _mini(results, "c10-single-ortho", seed, single - 0.50)
    tables.main(["ablation", "--results", str(results), "--out", str(out)])
    ortho = next(line for line in _claims(out, "ablation.mini-clean") if "of SingleShared" in line)
    assert ortho.startswith("- **inconclusive**") and "zero spread" in ortho


def test_rows_pair_on_the_seeds_they_share(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed, (single, delta) in enumerate([(20.0, -0.5), (21.0, -0.4), (22.0, -0.6)]):
        _mini(results, "c10-single", seed, single)
        if seed < 2:
            _mini(results, "c10-single-ortho", seed, single + delta)
    tables.main(["ablation", "--results", str(results), "--out", str(out)])
    ortho = next(line for line in _claims(out, "ablation.mini-clean") if "of SingleShared" in line)
    assert "paired by seed, n=2; seeds left out: 2" in ortho and "Welch" not in ortho


def test_a_diverged_run_is_shown_and_never_crashes_the_table(tmp_path, capsys):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed in range(3):
        _mini(results, "c10-single", seed, 20.0 + seed)
        _mini(results, "c10-single-ortho", seed, 19.5 + seed if seed < 2 else float("nan"))
    assert tables.main(["ablation", "--results", str(results), "--out", str(out)]) == 0
    row = _csv(out, "ablation.mini-clean").loc["c10-single-ortho"]
    assert row["top1_err"] == "20.00 ± 0.71" and int(row["n"]) == 2 and "diverged" in row["note"]
    assert "seed 2" in row["note"]


def test_a_verdict_that_changes_under_the_final_epoch_is_fragile(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    # selected epochs: differences −0.5, −0.4, −0.6 (holds); final epochs: +0.3, −0.9, +0.4 (inconclusive)
    for seed, (single, delta, final_single, final_delta) in enumerate(
            [(20.0, -0.5, 20.5, 0.3), (21.0, -0.4, 21.5, -0.9), (22.0, -0.6, 22.5, 0.4)]):
        _mini(results, "c10-single", seed, single, final_single)
        _mini(results, "c10-single-ortho", seed, single + delta, final_single + final_delta)
    tables.main(["ablation", "--results", str(results), "--out", str(out)])
    ortho = next(line for line in _claims(out, "ablation.mini-clean") if "of SingleShared" in line)
    assert ortho.startswith("- **holds, fragile**")
    assert "the final epoch instead of the selected one: inconclusive" in ortho


def test_seeds_run_on_different_hardware_are_said_in_the_caption(tmp_path):
    import json

    results, out = tmp_path / "results", tmp_path / "out"
    for seed, threads in ((0, 1), (1, 2)):
        folder = write_run(results, "table1", "resnet56", seed, [8.0, 7.0 + seed])
        record = json.loads((folder / "result.json").read_text())
        record["execution"]["device"] = f"cpu (x86_64, {threads} threads)"
        (folder / "result.json").write_text(json.dumps(record))
    tables.main(["table1", "--results", str(results), "--out", str(out)])
    caption = (out / "table1.md").read_text().split("\n")[2]
    assert "Seeds ran on different hardware (cpu (x86_64, 1 threads): 1 runs; cpu (x86_64, 2 threads): 1 runs)" in caption


def test_a_custom_settings_suggested_command_keeps_its_overrides(tmp_path):
    from replicate.analysis import _suggestion, _Test
    from replicate.config import Setting
    from replicate import spec, stats

    table = spec.load("table1")
    a_row, b_row = (next(r for r in table.rows if r.id == i) for i in ("resnet56-s16u1", "resnet56"))
    setting = Setting("smoke", "paper", "fp32", (("epochs", 10),))
    from replicate.analysis import RowResult
    a = RowResult(a_row, setting, "cifar10", a_row.model, 1, 1)
    b = RowResult(b_row, setting, "cifar10", b_row.model, 2, 1)
    test = _Test(stats.compare({0: 7.0, 1: 7.5, 2: 7.2}, {0: 7.2, 1: 7.4, 2: 7.5}), "lower", None, "points", "err")
    line = _suggestion(test, "inconclusive", 1, a, b, table)
    assert "--set epochs=10 --seeds" in line
