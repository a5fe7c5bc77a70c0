"""Spec validation and plan expansion."""
from pathlib import Path

import pytest

from replicate import plan, spec
from replicate.config import RECIPES
from replicate.spec import SpecError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "user.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name", sorted(spec.available()))
def test_every_shipped_table_loads(name):
    table = spec.load(name)
    assert table.rows and table.title
    assert len({r.id for r in table.rows}) == len(table.rows)


def test_shipped_tables_have_the_paper_rows():
    assert [r.model for r in spec.load("table1").rows] == [
        "ResNet32", "ResNet32-S8U1", "ResNet32-S16U1", "ResNet32-S16U1*",
        "ResNet56", "ResNet56-S8U1", "ResNet56-S16U1", "ResNet56-S16U1*"]
    table2 = {r.id: r for r in spec.load("table2").rows}
    assert table2["resnext50-s64u4"].label == "ResNeXt50-S16U1"  # the printed label is kept (SPEC §6.6)
    assert table2["resnext50-s64u4"].published.flag["kind"] == "label-swap"
    assert table2["resnet34-s32u1"].published.top1_err == 21.79
    rank = spec.load("rank")
    assert len(rank.rows) == 15 and all(r.published is not None for r in rank.rows)
    gradnorm = spec.load("gradnorm")
    assert {(r.orthogonality, r.unshared_bn) for r in gradnorm.rows} == {
        (True, True), (False, True), (True, False), (False, False)}
    assert all(r.grad_stats == (10, 2) for r in gradnorm.rows)


def test_ablated_rows_are_not_compared_with_the_paper():
    rows = {r.id: r for r in spec.load("ablation").rows}
    assert rows["c10-single-ortho"].published.top1_err == 7.46
    assert rows["c10-single"].published is None  # no orthogonality: not what the paper printed
    depth = {r.id: r for r in spec.load("depth").rows}
    assert depth["depth-2"].sharing_depth == 2 and depth["depth-2"].published is None


def test_variants_inherit_from_their_base_row(tmp_path):
    table = spec.load(write(tmp_path, """
title: t
dataset: cifar10
recipe: cifar10
rows:
  - {id: a, model: ResNet20-S4U1, lambda_r: 5, seeds: 3}
  - {id: b, base: a, orthogonality: false}
"""))
    a, b = table.rows
    assert (b.model, b.lambda_r, b.seeds, b.orthogonality) == ("ResNet20-S4U1", 5.0, 3, False)
    assert a.orthogonality


@pytest.mark.parametrize("text,fragments", [
    ("title: t\nrows: [{id: a, model: ResNet20, dataset: cifar10, recipe: cifar10, lamda_r: 3}]",
     ["row 'a'", "unknown key 'lamda_r'"]),
    ("title: t\nrows: [{id: a, model: ResNet20, dataset: cifar10, recipe: cifar11}]",
     ["row 'a'", "key 'recipe'", "cifar10, cifar100"]),
    ("title: t\nrows: [{id: a, model: ResNet21, dataset: cifar10, recipe: cifar10}]",
     ["row 'a'", "key 'model'", "6n+2"]),
    ("title: t\nrows: [{id: a, model: ResNet20, dataset: cifar10, recipe: cifar10, seeds: two}]",
     ["key 'seeds'", "number of seeds"]),
    ("title: t\nrows: [{id: a, model: ResNet20, dataset: cifar10, recipe: cifar10}, {id: a, model: ResNet32,"
     " dataset: cifar10, recipe: cifar10}]", ["duplicate row id"]),
    ("title: t\nrows: [{id: b, base: a, model: ResNet20, dataset: cifar10, recipe: cifar10}]",
     ["'base' names 'a'"]),
    ("title: t\nrows: [{id: a, dataset: cifar10, recipe: cifar10}]", ["missing key 'model'"]),
    ("title: t\ncolour: red\nrows: []", ["unknown top-level key 'colour'"]),
    ("rows: [{id: a}]", ["missing required key 'title'"]),
    ("title: t\nrows: [{id: a, model: ResNet20, dataset: cifar10, recipe: cifar10,\n", ["not valid YAML"]),
    ("title: t\nrows: [{id: a, model: ResNet20-S4U1, dataset: cifar10, recipe: cifar10, "
     "published: {label: Nope}}]", ["no published row 'Nope'"]),
])
def test_bad_specs_fail_at_load_time_naming_file_row_and_key(tmp_path, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as error:
        spec.load(path)
    message = str(error.value)
    assert path in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_unknown_table_names_the_choices():
    with pytest.raises(SpecError, match="unknown table 'table9'.*table1"):
        spec.load("table9")


def test_plan_expands_rows_times_seeds_with_stable_distinct_ids(tmp_path):
    table = spec.load("table1")
    runs = plan.expand(table, tmp_path, "full", seeds=3, rows="resnet56*")
    assert len(runs) == 4 * 3
    assert len({r.run_id for r in runs}) == 12
    again = plan.expand(table, tmp_path, "full", seeds=3, rows="resnet56*")
    assert [r.run_id for r in runs] == [r.run_id for r in again]
    assert all(r.directory.parent == tmp_path / "table1" for r in runs)
    assert runs[0].config.recipe == RECIPES["cifar10"] and runs[0].state == "pending"


def test_profiles_change_the_config_and_so_the_run_id(tmp_path):
    table = spec.load("table1")
    full = plan.expand(table, tmp_path, "full", rows="resnet56-s16u1")[0]
    smoke = plan.expand(table, tmp_path, "smoke", rows="resnet56-s16u1")[0]
    mini = plan.expand(table, tmp_path, "mini", rows="resnet56-s16u1")[0]
    assert smoke.config.synthetic and smoke.config.recipe.epochs == 2
    assert [p.start for p in smoke.config.recipe.phases] == [1, 2]
    assert mini.config.data == "fashion-mnist" and mini.config.model == "ResNet20-S16U1"
    assert len({full.run_id, smoke.run_id, mini.run_id}) == 3


def test_mini_profile_covers_cifar10_rows_only(tmp_path):
    ablation = spec.load("ablation")
    runs = plan.expand(ablation, tmp_path, "mini")
    assert {r.row.dataset for r in runs} == {"cifar10"}
    assert {r.id for r in plan.skipped_rows(ablation, "mini")} == {r.id for r in ablation.rows
                                                                  if r.dataset == "cifar100"}
    with pytest.raises(SpecError, match="CIFAR-10-style rows only"):
        plan.expand(spec.load("table2"), tmp_path, "mini")


def test_rows_pattern_that_matches_nothing_lists_the_rows(tmp_path):
    with pytest.raises(SpecError, match="matches no row of table1; rows are: resnet32,"):
        plan.expand(spec.load("table1"), tmp_path, rows="densenet*")


def test_cost_estimate_grows_with_compute_and_epochs(tmp_path):
    table = spec.load("table3")
    runs = {r.row.id: r for r in plan.expand(table, tmp_path)}
    assert runs["resnet34"].gpu_hours() > runs["resnet34-s32u1"].gpu_hours() > runs["mobilenetv2"].gpu_hours() / 10
    assert 10 < runs["resnet34"].gpu_hours() < 1000
