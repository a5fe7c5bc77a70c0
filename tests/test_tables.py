"""Tables regenerated from fixture results: aggregates, verdicts, claims, and rows never mixed."""
import pandas as pd

from conftest import write_run
from replicate import tables


def _csv(out, name):
    return pd.read_csv(out / f"{name}.csv", keep_default_na=False).set_index("row")


def test_table_numbers_equal_the_fixture_aggregates(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for seed, (base, double) in enumerate([(7.0, 6.2), (7.4, 6.6)]):
        write_run(results, "table1", "resnet56", seed, [base + 1, base])
        write_run(results, "table1", "resnet56-s16u1-double", seed, [double + 1, double])
    assert tables.main(["table1", "--results", str(results), "--out", str(out)]) == 0
    frame = _csv(out, "table1")
    assert frame.loc["resnet56", "top1_err"] == "7.20 ± 0.28" and int(frame.loc["resnet56", "n"]) == 2
    double = frame.loc["resnet56-s16u1-double"]
    assert double["top1_err"] == "6.40 ± 0.28" and float(double["top1_err_published"]) == 6.3
    assert float(double["difference"]) == 0.1 and double["verdict"] == "flagged (within tolerance)"  # 0.31M: SPEC §6.6 rounding
    assert float(double["params_M"]) == 0.319 and double["params_published"] == "0.31M"
    assert float(double["flops_G"]) == 0.296 and double["flops_published"] == "0.30G"
    assert frame.loc["resnet32-s8u1", "verdict"] == "not run"
    markdown = (out / "table1.md").read_text()
    assert "**holds** — ResNet56-S16U1* saves 62.6% of ResNet56's parameters and its error is lower" in markdown
    assert "\\begin{table}" in (out / "table1.tex").read_text() and "\\toprule" in (out / "table1.tex").read_text()


def test_worse_better_and_flagged_rows(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    write_run(results, "table2", "resnet34-s32u1", 0, [25.0 + 1, 25.0])
    write_run(results, "table2", "resnext50-s64u4", 0, [19.0 + 1, 19.0])
    write_run(results, "table2", "resnet34-s8u1", 0, [20.0 + 1, 20.0])
    tables.main(["table2", "--results", str(results), "--out", str(out)])
    frame = _csv(out, "table2")
    assert frame.loc["resnet34-s32u1", "verdict"] == "worse"
    assert frame.loc["resnet34-s8u1", "verdict"] == "better"
    resnext = frame.loc["resnext50-s64u4"]  # the printed label, with the configuration trained
    assert resnext["model"] == "ResNeXt50-S16U1" and resnext["configuration"] == "ResNeXt50-S64U4" and resnext["verdict"] == "flagged (better)"
    assert "label-swap" in resnext["note"]


def test_other_profiles_are_never_compared_with_the_paper(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    write_run(results, "ablation", "c10-single-ortho", 0, [9.0 + 1, 9.0], profile="mini")
    write_run(results, "ablation", "c10-original", 0, [9.5 + 1, 9.5], profile="mini")
    tables.main(["ablation", "--results", str(results), "--out", str(out)])
    paper_setting = pd.read_csv(out / "ablation.csv", keep_default_na=False)  # always shown, here empty
    assert set(paper_setting.verdict) == {"not run"}
    frame = _csv(out, "ablation.mini-clean")
    row = frame.loc["c10-single-ortho"]
    assert row["model"] == "ResNet56-S16U1" and row["configuration"] == "ResNet20-S16U1"
    assert row["data"] == "fashion-mnist" and row["verdict"] == "not comparable"
    assert row["top1_err_published"] == row["params_published"] == row["difference"] == ""
    assert "not compared with the paper's 7.46%" in row["note"]
    markdown = (out / "ablation.mini-clean.md").read_text()
    assert "**holds** — CIFAR-10: the shared basis with orthogonality matches or beats" in markdown
    assert "**not run** — CIFAR-10: orthogonality lowers the error of SingleShared" in markdown


def test_empty_results_render_every_table_as_not_run(tmp_path):
    out = tmp_path / "out"
    assert tables.main(["--results", str(tmp_path / "none"), "--out", str(out)]) == 0
    for name in ("table1", "table2", "table3", "ablation", "depth", "rank", "gradnorm"):
        frame = pd.read_csv(out / f"{name}.csv", keep_default_na=False)
        assert set(frame.verdict) == {"not run"}
    assert "top5_err_published" in pd.read_csv(out / "table3.csv").columns
