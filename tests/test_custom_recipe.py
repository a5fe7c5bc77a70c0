"""A custom recipe (run --set, a row's set:) in the generated tables: the row's note says what was overridden."""
from replicate import analysis, spec, tables
from replicate.config import Setting


def _row(table: str, row_id: str):
    return next(r for r in spec.load(table).rows if r.id == row_id)


def test_the_note_of_a_custom_recipe_says_what_was_overridden():
    row = _row("table1", "resnet56-s16u1")
    custom = analysis.RowResult(row, Setting("full", "paper", overrides=(("epochs", 10), ("lr", 0.05))),
                                "cifar10", row.model, 0, 0)
    note = tables._note(custom, None, "")
    assert "custom recipe (epochs=10, lr=0.05): not the paper's recipe, never compared with its numbers" in note
    paper = analysis.RowResult(row, Setting("full", "paper"), "cifar10", row.model, 0, 0)
    assert "custom recipe" not in tables._note(paper, row.published, "")


def test_a_rows_own_set_is_in_its_note_too(tmp_path):
    path = tmp_path / "own.yaml"
    path.write_text("title: t\ndataset: cifar10\nrecipe: cifar10\nrows:\n  - {id: a, model: ResNet20, "
                    "set: {epochs: 1}}\n")
    row = spec.load(str(path)).rows[0]
    result = analysis.RowResult(row, Setting("full", "paper"), "cifar10", row.model, 0, 0)
    assert not result.at_paper_scale and "custom recipe (epochs=1)" in tables._note(result, None, "")


def test_a_clean_run_without_a_validation_split_is_refused(tmp_path, capsys):
    """The clean protocol selects the epoch on held-out images: --set validation=0 would leave it none (and
    select on the test set under the name 'clean')."""
    from replicate.run import main

    argv = ["table1", "--profile", "smoke", "--rows", "resnet32", "--results", str(tmp_path), "--dry-run"]
    assert main([*argv, "--protocol", "clean", "--set", "validation=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "validation=0" in err and "--protocol paper" in err
    assert main([*argv, "--protocol", "paper", "--set", "validation=0"]) == 0
