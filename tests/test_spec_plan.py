"""Spec validation and plan expansion."""
from pathlib import Path

import pytest

from conftest import REPO
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
    assert [r.model.name for r in spec.load("table1").rows] == [
        "ResNet32", "ResNet32-S8U1", "ResNet32-S16U1", "ResNet32-S16U1*",
        "ResNet56", "ResNet56-S8U1", "ResNet56-S16U1", "ResNet56-S16U1*"]
    table2 = {r.id: r for r in spec.load("table2").rows}
    assert table2["resnext50-s64u4"].label == "ResNeXt50-S16U1"  # the printed label is kept (docs/paper.md: Labels that contradict the code)
    assert table2["resnext50-s64u4"].published.flag["kind"] == "label-swap"
    assert table2["resnet34-s32u1"].published.top1_err == 21.79
    rank = spec.load("rank")
    assert len(rank.rows) == 15 and all(r.published is not None for r in rank.rows)
    gradnorm = spec.load("gradnorm")
    assert {(r.training.orthogonality, r.model.unshared_bn) for r in gradnorm.rows} == {
        (True, True), (False, True), (True, False), (False, False)}
    assert all(r.grad_stats == (10, 2) for r in gradnorm.rows)


def test_ablated_rows_are_not_compared_with_the_paper():
    rows = {r.id: r for r in spec.load("ablation").rows}
    assert rows["c10-single-ortho"].published.top1_err == 7.46
    assert rows["c10-single"].published is None  # no orthogonality: not what the paper printed
    depth = {r.id: r for r in spec.load("depth").rows}
    assert depth["depth-2"].model.sharing_depth == 2 and depth["depth-2"].published is None


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
    assert (b.model.name, b.training.lambda_r, b.seeds, b.training.orthogonality) == ("ResNet20-S4U1", 5.0, 3, False)
    assert a.training.orthogonality


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
    ("title: t\nseeds: '3'\nrows: [{id: a, model: ResNet20, dataset: cifar10, recipe: cifar10}]",
     ["table default", "key 'seeds' must be a number of seeds"]),
    ("title: t\ngrad_stats: [10, 2]\nrows: [{id: a, model: ResNet20, dataset: cifar10, recipe: cifar10}]",
     ["key 'grad_stats' must be {every_batches: N, every_epochs: M}"]),
    ("title: t\nrows: [{id: a, model: ResNet20, dataset: cifar10, recipe: cifar10}, {id: b, base: a}]\n"
     "claims: [{row: b, than: a, primary: 'yes'}]", ["claim 1", "key 'primary' must be true or false"]),
])
def test_bad_specs_fail_at_load_time_naming_file_row_and_key(tmp_path, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as error:
        spec.load(path)
    message = str(error.value)
    assert path in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_claims_can_be_marked_primary(tmp_path):
    table = spec.load(write(tmp_path, """
title: t
rows: [{id: a, model: ResNet20, dataset: cifar10, recipe: cifar10}, {id: b, base: a, model: ResNet20-S16U1}]
claims: [{row: b, than: a, primary: true}, {row: a, than: b}]
"""))
    assert [c.primary for c in table.claims] == [True, False]


def test_the_ablation_preregisters_its_primary_claims():
    """The primary family is fixed in the spec, before the seeds that decide it were run."""
    primary = [(c.row, c.than, c.relation) for c in spec.load("ablation").claims if c.primary]
    assert primary == [("c10-single-ortho", "c10-original", "not_worse"),
                       ("c10-single-ortho", "c10-naive-ortho", "lower"),
                       ("c10-single-ortho", "c10-single", "lower"),
                       ("c10-double-ortho", "c10-single-ortho", "lower")]


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
    assert all(r.folder.path.parent == tmp_path / "table1" for r in runs)
    assert runs[0].config.recipe == RECIPES["cifar10"] and runs[0].state == "not started"


def test_profiles_change_the_config_and_so_the_run_id(tmp_path):
    table = spec.load("table1")
    full = plan.expand(table, tmp_path, "full", rows="resnet56-s16u1")[0]
    smoke = plan.expand(table, tmp_path, "smoke", rows="resnet56-s16u1")[0]
    mini = plan.expand(table, tmp_path, "mini", rows="resnet56-s16u1")[0]
    assert smoke.config.synthetic and smoke.config.recipe.epochs == 2
    assert [p.start for p in smoke.config.recipe.phases] == [1, 2]
    assert mini.config.data == "fashion-mnist" and mini.config.model.name == "ResNet20-S16U1"
    assert len({full.run_id, smoke.run_id, mini.run_id}) == 3


def test_mini_profile_covers_cifar10_rows_only(tmp_path):
    ablation = spec.load("ablation")
    runs = plan.expand(ablation, tmp_path, "mini")
    assert {r.row.dataset for r in runs} == {"cifar10"}
    assert {r.id for r in plan.skipped_rows(ablation, "mini")} == {r.id for r in ablation.rows
                                                                  if r.dataset == "cifar100"}
    with pytest.raises(SpecError, match="CIFAR-10-style rows only"):
        plan.expand(spec.load("table2"), tmp_path, "mini")


def test_a_user_spec_cannot_take_a_shipped_tables_name(tmp_path):
    (tmp_path / "table1.yaml").write_text((spec.SPECS_DIR / "table1.yaml").read_text())
    with pytest.raises(SpecError, match="has the name of the shipped table table1"):
        spec.load(str(tmp_path / "table1.yaml"))
    assert spec.load(str(spec.SPECS_DIR / "table1.yaml")).shipped  # the shipped file itself, by path, is fine


def test_rows_pattern_that_matches_nothing_lists_the_rows(tmp_path):
    with pytest.raises(SpecError, match="'densenet\\*' matches no row of table1; rows are: resnet32,"):
        plan.expand(spec.load("table1"), tmp_path, rows="densenet*")
    with pytest.raises(SpecError, match="pattern 'resnet99' matches no row"):  # one good pattern is not enough
        plan.expand(spec.load("table1"), tmp_path, rows="resnet32,resnet99")
    with pytest.raises(SpecError, match="--rows ',' names no row"):
        plan.expand(spec.load("table1"), tmp_path, rows=",")


def test_cost_estimate_grows_with_compute_and_epochs(tmp_path):
    table = spec.load("table3")
    runs = {r.row.id: r for r in plan.expand(table, tmp_path)}
    assert runs["resnet34"].gpu_hours() > runs["resnet34-s32u1"].gpu_hours() > runs["mobilenetv2"].gpu_hours() / 10
    assert 10 < runs["resnet34"].gpu_hours() < 1000


# -- run ids: the identity of stored results ------------------------------------------------------------------
def test_run_ids_of_a_fixed_config_are_pinned(tmp_path):
    """Golden ids: a change to what a run id hashes would silently turn every stored result into "not run"."""
    pinned = {("table1", "resnet56-s16u1-double", "full", 0): "resnet56-s16u1x-full-seed0-",
              ("ablation", "c10-single-ortho", "mini", 1): "resnet20-s16u1-mini-seed1-",
              ("depth", "depth-2", "smoke", 0): "resnet56-s16u1-smoke-seed0-"}
    ids = {key: plan.expand(spec.load(key[0]), tmp_path, key[2], seeds=key[3] + 1, rows=key[1])[-1].run_id
           for key in pinned}
    # the ids the code gave before run ids had a canonical form (commit 53a4483)
    assert ids == {("table1", "resnet56-s16u1-double", "full", 0): "resnet56-s16u1x-full-seed0-67746a7548",
                   ("ablation", "c10-single-ortho", "mini", 1): "resnet20-s16u1-mini-seed1-beba26e891",
                   ("depth", "depth-2", "smoke", 0): "resnet56-s16u1-smoke-seed0-e3a4f41a81"}
    assert all(ids[key].startswith(prefix) for key, prefix in pinned.items())


def test_a_later_knob_at_its_default_leaves_the_run_id_alone(tmp_path):
    run = plan.expand(spec.load("table1"), tmp_path, "full", rows="resnet56")[0]
    assert "precision" in run.config.to_dict() and "precision" not in run.config.canonical()
    bf16 = plan.expand(spec.load("table1"), tmp_path, "full", rows="resnet56", precision="bf16")[0]
    assert bf16.run_id != run.run_id and bf16.config.canonical()["precision"] == "bf16"


def test_the_committed_results_are_found_as_done_by_their_rows():
    runs = plan.expand(spec.load("ablation"), REPO / "results", "mini", seeds=2)
    assert len(runs) == 22 and {run.state for run in runs} == {"done"}


def test_every_row_reports_the_size_of_the_network_it_trains(tmp_path):
    """What --dry-run and the tables show is counted on the network the run trains (not the row's name)."""
    from replicate.complexity import count_params, lookup
    from replicate.config import PROFILES
    from replicate.models import create

    trained = {run.config.model for name in spec.available() for profile in PROFILES
               if any(PROFILES[profile].applies(r.dataset) for r in spec.load(name).rows)
               for run in plan.expand(spec.load(name), tmp_path, profile, seeds=1)}
    for model in trained:
        if model.dataset != "imagenet":  # the ImageNet networks are the same code at another stem: slow to build
            assert lookup(model).params == count_params(create(model)), model
    depth = {r.row.id: lookup(r.config.model).params for r in plan.expand(spec.load("depth"), tmp_path)}
    assert depth == {"depth-1": 609_530, "depth-2": 415_994, "depth-4": 319_226, "depth-all": 270_842}
    nobn = {r.row.id: lookup(r.config.model).params for r in plan.expand(spec.load("gradnorm"), tmp_path)}
    assert nobn["ortho-nobn"] == nobn["noortho-nobn"] == 6_477_220 and nobn["ortho-bn"] == 6_485_844


# -- overrides (--set KEY=VALUE, a row's ``set:``): a custom recipe, its own run id (issue 28) ------------------
def test_overrides_change_the_recipe_and_the_run_id_and_only_then(tmp_path):
    table = spec.load("table1")
    paper = plan.expand(table, tmp_path, "full", rows="resnet56")[0]
    custom = plan.expand(table, tmp_path, "full", rows="resnet56",
                         overrides={"epochs": 10, "lr": 0.05, "weight_decay": 1e-4, "batch_size": 128})[0]
    recipe = custom.config.recipe
    assert (recipe.epochs, recipe.batch_size, recipe.weight_decay) == (10, 128, 1e-4)
    assert [(p.start, p.lr) for p in recipe.phases] == [(1, 0.05), (6, 0.005), (9, 0.0005)]  # scaled by lr / 0.1
    assert custom.run_id != paper.run_id and custom.run_id.startswith("resnet56-full-seed0-")
    assert custom.config.overrides == (("batch_size", 128), ("epochs", 10), ("lr", 0.05), ("weight_decay", 1e-4))
    assert custom.config.custom and not paper.config.custom
    assert "overrides" not in paper.config.canonical() and custom.config.canonical()["overrides"]["epochs"] == 10
    stored = custom.config.to_dict()
    assert type(custom.config).from_dict(stored) == custom.config  # config.json reads back with its overrides
    lam = plan.expand(table, tmp_path, "full", rows="resnet56-s16u1-double", overrides={"lambda_r": 1})[0]
    assert lam.config.training.lambda_r == 1.0 and lam.config.custom


def test_a_row_may_set_overrides_validated_at_load(tmp_path):
    base = "title: t\ndataset: cifar10\nrecipe: cifar10\nrows:\n  - {id: a, model: ResNet20}\n"
    table = spec.load(write(tmp_path, base + "  - {id: b, base: a, set: {epochs: 1, lr: 0.02}}\n"))
    rows = {r.id: r for r in table.rows}
    assert rows["b"].overrides == (("epochs", 1), ("lr", 0.02)) and rows["a"].overrides == ()
    assert not rows["b"].trains_as_paper and rows["b"].published is None
    runs = {r.row.id: r for r in plan.expand(table, tmp_path, "smoke")}
    assert runs["b"].config.recipe.epochs == 1 and runs["a"].config.recipe.epochs == 2
    both = plan.expand(table, tmp_path, "smoke", rows="b", overrides={"epochs": 3})[0]  # the command line wins
    assert dict(both.config.overrides) == {"epochs": 3, "lr": 0.02}
    for bad, fragment in [("{nope: 1}", "unknown key 'nope'"), ("{epochs: 0}", "epochs must be an integer >= 1"),
                          ("{lr: fast}", "lr must be a number > 0"), ("[1]", "a mapping")]:
        with pytest.raises(SpecError) as error:
            spec.load(write(tmp_path, base + f"  - {{id: b, base: a, set: {bad}}}\n"))
        message = str(error.value)
        assert "row 'b'" in message and "'set'" in message and fragment in message and "\n" not in message
        assert "epochs, lr, batch_size" in message  # the valid keys
