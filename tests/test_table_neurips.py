"""The published (NeurIPS 2021) version's ImageNet table: its recipes, its printed numbers (2021 README:
FLOPs are MACs as fvcore totals them), its plan and GPU-hours, a smoke run and its rendering."""
import pandas as pd
import pytest

from replicate import complexity, plan, published, spec
from replicate.config import RECIPES
from replicate.models import ModelSpec

TABLE = "table3-neurips"


def test_the_published_versions_recipes():
    """936a886's ImageNet schedules: ResNet50/101 drops at 61/101/141 over 150 epochs, MobileNetV2's last step
    is lr/200 (it was lr/1000); batch 256 on 4 GPUs; ResNet50-Shared alone trained with weight decay 4e-5."""
    resnet, resnet50_shared, mobilenet = (RECIPES[name] for name in (
        "imagenet-resnet-2021", "imagenet-resnet50-shared-2021", "imagenet-mobilenet-2021"))
    assert [(p.start, p.lr) for p in resnet.phases] == [(1, 0.1), (61, 0.01), (101, 0.001), (141, 0.0001)]
    assert (resnet.epochs, resnet.batch_size, resnet.gpus, resnet.weight_decay) == (150, 256, 4, 1e-4)
    assert resnet50_shared.phases == resnet.phases and resnet50_shared.weight_decay == 4e-5
    assert [(p.start, p.lr) for p in mobilenet.phases] == [(1, 0.1), (151, 0.01), (226, 0.001), (286, 0.0005)]
    assert (mobilenet.epochs, mobilenet.batch_size, mobilenet.weight_decay) == (300, 256, 1e-5)
    assert all(not p.restart for r in (resnet, resnet50_shared, mobilenet) for p in r.phases)
    assert RECIPES["imagenet-mobilenet"].phases[-1].lr == 0.0001  # the 2020 recipe is unchanged


# (label as printed, zoo model, top-1, top-5, params, FLOPs)
README_2021 = [
    ("ResNet34-S48U1*", "ResNet34-S48U1*", 26.67, 8.54, "11.79M", "3.26G"),
    ("ResNet50-Shared", "ResNet50-Shared", 23.64, 6.98, "20.51M", "4.11G"),
    ("ResNet50-Shared++", "ResNet50-Shared++", 23.95, 7.14, "18.26M", "4.11G"),
    ("ResNet101-Shared", "ResNet101-Shared", 22.31, 6.47, "29.47M", "7.83G"),
    ("MobileNetV2-Shared", "MobileNetV2-Shared", 27.61, 9.34, "3.24M", "0.33G"),
    ("MobileNetV2-Shared++", "MobileNetV2-Shared++", 28.21, 9.85, "2.98M", "0.33G"),
]
README_2020_NEW = [  # 8fdd8c0: the rows of networks added after the ICLR state (FLOPs printed as 2 x MACs)
    ("imagenet", "ResNet50-Shared", "ResNet50-Shared++", 23.95, 7.14, "18.26M", "8.22G"),
    ("imagenet", "MobileNetV2-SharedDouble", "MobileNetV2-SharedDouble", 28.21, 9.85, "2.98M", "0.66G"),
    ("cifar100", "MobileNetV2-SharedDouble", "MobileNetV2-Shared++", 27.54, None, "1.90M", "0.14G"),
]


def test_the_2021_readme_rows_are_recorded_as_printed():
    rows = [(e.label, e.model, e.top1_err, e.top5_err, e.params.text, e.flops.text)
            for e in published.load() if e.source == "936a886"]
    assert rows == README_2021
    assert published.sources()["936a886"].flops_convention == "MACs"
    rows = [(e.dataset, e.label, e.model, e.top1_err, e.top5_err, e.params.text, e.flops.text)
            for e in published.load() if e.source == "8fdd8c0" and "SharedDouble" in e.label + e.model
            or e.source == "8fdd8c0" and e.label == "ResNet50-Shared"]
    assert sorted(rows) == sorted(README_2020_NEW)


def test_every_printed_size_of_the_new_networks_matches_our_counts():
    new = [e for e in published.load() if e.source == "936a886" or e.source == "8fdd8c0" and e.model in
           {"ResNet50-Shared++", "MobileNetV2-SharedDouble", "MobileNetV2-Shared++"}]
    assert len(new) == 9
    for entry in new:
        counts = complexity.lookup(ModelSpec(entry.model, entry.dataset))
        assert complexity.check_entry(entry, counts.params, counts.macs)["verdict"] == "match", entry.label


def test_the_table_plans_every_row_with_its_recipe_and_published_row(tmp_path):
    table = spec.load(TABLE)
    rows = {row.id: row for row in table.rows}
    assert table.published_source == "936a886" and {row.dataset for row in table.rows} == {"imagenet"}
    assert {rows[i].model.name for i in rows} == {
        "ResNet34", "ResNet34-S48U1*", "ResNet50", "ResNet50-Shared", "ResNet50-Shared++", "ResNet101",
        "ResNet101-Shared", "MobileNetV2", "MobileNetV2-Shared", "MobileNetV2-Shared++",
        "MobileNetV2-SharedDouble"}
    assert rows["resnet50-shared"].recipe == "imagenet-resnet50-shared-2021"
    assert rows["resnet50-sharedpp"].recipe == "imagenet-resnet-2021"
    assert rows["mobilenetv2-sharedpp"].recipe == "imagenet-mobilenet-2021"
    assert rows["mobilenetv2-shareddouble"].recipe == "imagenet-mobilenet"  # the 2020 network, the 2020 recipe
    printed = {i: (r.published.source, r.published.label) for i, r in rows.items() if r.published}
    assert printed == {
        "resnet34-s48u1-double": ("936a886", "ResNet34-S48U1*"), "resnet50-shared": ("936a886", "ResNet50-Shared"),
        "resnet50-sharedpp": ("936a886", "ResNet50-Shared++"), "resnet101-shared": ("936a886", "ResNet101-Shared"),
        "mobilenetv2-shared": ("936a886", "MobileNetV2-Shared"),
        "mobilenetv2-sharedpp": ("936a886", "MobileNetV2-Shared++"),
        "mobilenetv2-shareddouble": ("8fdd8c0", "MobileNetV2-SharedDouble")}
    runs = {run.row.id: run for run in plan.expand(table, tmp_path)}
    hours = {i: run.gpu_hours() for i, run in runs.items()}
    assert hours["resnet101-shared"] == pytest.approx(hours["resnet101"])  # same MACs, same schedule
    assert hours["resnet101"] > hours["resnet50"] > hours["resnet34-s48u1-double"] > hours["mobilenetv2-sharedpp"]
    assert 10 < hours["mobilenetv2-sharedpp"] and hours["resnet101"] < 2000


@pytest.mark.slow
def test_a_row_runs_in_the_smoke_profile_and_renders_beside_its_published_numbers(tmp_path):
    from replicate import run as run_cli, tables

    results, out = tmp_path / "results", tmp_path / "out"
    assert run_cli.main([TABLE, "--profile", "smoke", "--rows", "mobilenetv2-sharedpp", "--cluster", "inline",
                         "--results", str(results)]) == 0
    assert tables.main([TABLE, "--results", str(results), "--out", str(out)]) == 0
    smoke = pd.read_csv(out / f"{TABLE}.smoke-paper.csv", keep_default_na=False).set_index("row")
    assert smoke.loc["mobilenetv2-sharedpp", "n"] == 1
    assert "not compared with the paper's 28.21%" in smoke.loc["mobilenetv2-sharedpp", "note"]  # synthetic data
    paper = pd.read_csv(out / f"{TABLE}.csv", keep_default_na=False).set_index("row")  # the paper's setting
    assert paper.loc["mobilenetv2-sharedpp", "top1_err_published"] == "28.21"
    assert paper.loc["resnet50-shared", ["params_published", "flops_published"]].tolist() == ["20.51M", "4.11G"]
    assert paper.loc["mobilenetv2-shareddouble", "flops_published"] == "0.66G"  # 2020: 2 x MACs
