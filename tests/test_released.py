"""The authors' released checkpoints: reading, identifying, writing back (replicate.released), and the
``evaluate`` command. Test data in fixtures/official-checkpoints (see its README): every key and shape of
the 16 released files, and three small CIFAR-10 files with the logits the authors' own model computes."""
import json
import re
from pathlib import Path

import pytest
import torch

from replicate import evaluate, released
from replicate.released import CheckpointError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official-checkpoints"
LAYOUTS = json.loads((FIXTURES / "layouts.json").read_text())
FILES = {"resnet32-s8u1": "ResNet32-S8U1", "resnet32-s16u1": "ResNet32-S16U1", "resnet56-s16u1x": "ResNet56-S16U1*"}

# Facts of the authors' layout, written independently of replicate.released: which model-level basis the
# copy a block holds is (DenseNet's dense block 4 uses basis 3; their MobileNetV2 shares from stage 3 on).
ALIASES = (
    (r"layer(\d)\.\d+\.shared_basis(_\d)?\.weight", lambda m: f"shared_basis_{m[1]}{m[2] or ''}.weight"),
    (r"stage(\d)\.\d+\.shared_basis1\.weight", lambda m: f"shared_basis_{int(m[1]) - 2}.weight"),
    (r"features\.dense_block_layer_(\d)\.bottle_neck_layer_\d+\.shared_basis\.weight",
     lambda m: f"shared_basis_{min(int(m[1]), 2) + 1}.weight"),
)


def alias_target(key: str, prefix: str) -> str | None:
    for pattern, target in ALIASES:
        match = re.fullmatch(pattern, key.removeprefix(prefix))
        if match:
            return prefix + target(match)
    return None


def random_state(entry: dict) -> dict[str, torch.Tensor]:
    """A state dict of ``entry``'s layout: random values, one tensor for all aliases, integer batch counts."""
    g = torch.Generator().manual_seed(len(entry["keys"]))
    state = {key: torch.tensor(7) if key.endswith("num_batches_tracked") else torch.randn(shape, generator=g)
             for key, shape in entry["keys"].items() if alias_target(key, entry["key_prefix"]) is None}
    aliases = {key: state[alias_target(key, entry["key_prefix"])] for key in entry["keys"] if key not in state}
    assert all("shared_basis" in key for key in aliases)
    state.update(aliases)
    return {key: state[key] for key in entry["keys"]}  # the file's order


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------ fixtures
@pytest.mark.parametrize("by_name", [True, False], ids=["named", "identified"])
@pytest.mark.parametrize("stem", sorted(FILES))
def test_fixture_reproduces_the_authors_logits(stem, by_name):
    expected = torch.load(FIXTURES / f"cifar10-{stem}.logits.pt", weights_only=True)
    model = released.load(FIXTURES / f"cifar10-{stem}.pth", FILES[stem] if by_name else None)
    assert not model.training
    with torch.no_grad():
        logits = model(expected["input"])
    assert logits.dtype == torch.float32
    assert (logits - expected["logits"]).abs().max().item() <= 1e-5
    stored = model.checkpoint
    assert (stored.model, stored.dataset, stored.acc, stored.epoch) == (FILES[stem], "cifar10", 93.07, 287)
    assert stored.has_optimizer == (stem == "resnet32-s16u1") and not stored.data_parallel


def test_read_reports_what_the_file_stores():
    ckpt = released.read(FIXTURES / "cifar10-resnet32-s16u1.pth")
    assert ckpt.has_optimizer and ckpt.epoch == 287 and ckpt.stored_top1_err == pytest.approx(6.93)
    assert released.identify(ckpt.state_dict) == ("ResNet32-S16U1", "cifar10")


# ------------------------------------------------------------------------------------------ layouts
@pytest.mark.parametrize("entry", LAYOUTS, ids=[f"{e['dataset']}-{e['ours']}" for e in LAYOUTS])
def test_every_released_layout_loads_and_round_trips(entry, tmp_path):
    state = random_state(entry)
    source, copy = tmp_path / "theirs.pth", tmp_path / "ours-as-theirs.pth"
    torch.save({"net_state_dict": state, "acc": 71.5, "epoch": 3}, source)
    model = released.load(source)  # identified; strict: nothing missing, nothing left over
    assert (model.checkpoint.model, model.checkpoint.dataset) == (entry["ours"], entry["dataset"])
    assert model.checkpoint.data_parallel == (entry["key_prefix"] == "module.")

    released.save(model, copy, layout="authors", acc=71.5, epoch=3)
    saved = torch.load(copy, map_location="cpu", weights_only=True)
    assert set(saved) == {"net_state_dict", "acc", "epoch"} and (saved["acc"], saved["epoch"]) == (71.5, 3)
    written = saved["net_state_dict"]
    assert list(written) == list(entry["keys"])  # the authors' keys, in their order
    for key, value in written.items():
        assert list(value.shape) == entry["keys"][key] and value.dtype == state[key].dtype, key
        assert torch.equal(value, state[key]), key
        target = alias_target(key, entry["key_prefix"])
        if target:  # an alias is the basis itself, stored once
            assert value.untyped_storage().data_ptr() == written[target].untyped_storage().data_ptr(), key
    again = released.load(copy, entry["ours"], entry["dataset"])  # by name this time: the same network
    for (key, value), other in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(value, other), key


def test_our_layout_round_trips(tmp_path):
    model = released.load(FIXTURES / "cifar10-resnet32-s8u1.pth")
    released.save(model, tmp_path / "ours.pth", layout="ours", acc=1.0)
    again = released.load(tmp_path / "ours.pth")
    assert again.checkpoint.model == "ResNet32-S8U1" and again.checkpoint.acc == 1.0
    for (key, value), other in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(value, other), key
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


# --------------------------------------------------------------------------------------- bad files
def test_an_alias_that_differs_is_refused(tmp_path):
    data = torch.load(FIXTURES / "cifar10-resnet32-s16u1.pth", map_location="cpu", weights_only=True)
    data["net_state_dict"]["layer2.3.shared_basis.weight"] = data["net_state_dict"]["shared_basis_2.weight"] + 1
    torch.save(data, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError) as error:
        released.load(tmp_path / "edited.pth")
    message = one_line(error)
    assert "edited.pth" in message and "'layer2.3.shared_basis.weight'" in message and "differs" in message


def test_a_truncated_file_is_refused(tmp_path):
    data = (FIXTURES / "cifar10-resnet32-s8u1.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        released.load(tmp_path / "cut.pth")
    assert "cut.pth" in one_line(error) and "truncated or corrupt" in one_line(error)


class NotATensor:
    pass


def test_a_pickle_that_weights_only_refuses_is_refused(tmp_path):
    torch.save({"net_state_dict": {"fc.weight": torch.zeros(1)}, "extra": NotATensor()}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError) as error:
        released.load(tmp_path / "code.pth")
    assert "code.pth" in one_line(error) and "weights_only=True" in one_line(error)


def test_the_wrong_model_names_the_key_and_the_model_that_fits():
    with pytest.raises(CheckpointError) as error:
        released.load(FIXTURES / "cifar10-resnet32-s16u1.pth", "ResNet32-S16U1*")
    message = one_line(error)
    assert "cifar10-resnet32-s16u1.pth" in message and "missing key 'shared_basis_1_1.weight'" in message
    assert message.endswith("it fits ResNet32-S16U1 (cifar10)")
    with pytest.raises(CheckpointError) as error:
        released.load(FIXTURES / "cifar10-resnet32-s16u1.pth", "ResNet32")  # a variant never released
    assert "no known layout" in one_line(error) and "it fits ResNet32-S16U1" in one_line(error)


def test_saving_a_variant_the_authors_never_released_is_refused(tmp_path):
    from replicate.models import create
    with pytest.raises(CheckpointError, match="layout='ours'"):
        released.save(create("ResNet20-U1", "cifar10"), tmp_path / "x.pth")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ evaluate
def test_evaluate_prints_the_table_end_to_end(capsys):
    checkpoint = FIXTURES / "cifar10-resnet32-s16u1.pth"
    assert evaluate.main(["--checkpoint", str(checkpoint), "--synthetic", "--batch-size", "64", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for column in evaluate.COLUMNS.values():
        assert column in lines[0]
    assert all(figure in lines[2] for figure in ("ResNet32-S16U1", "cifar10", "7.43", "6.93", "128", "cpu"))
    assert any(line.startswith("SYNTHETIC data") for line in lines)


def test_evaluate_json_is_a_flat_record(capsys):
    checkpoint = FIXTURES / "cifar10-resnet32-s8u1.pth"
    assert evaluate.main(["--checkpoint", str(checkpoint), "--model", "ResNet32-S8U1", "--synthetic",
                          "--batch-size", "50", "--format", "json", "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(evaluate.COLUMNS) <= set(record) and record["data"] == "synthetic"
    assert all(not isinstance(value, (dict, list)) for value in record.values())
    assert (record["model"], record["label"], record["images"]) == ("ResNet32-S8U1", "ResNet32-S8U1", 128)
    assert record["published_top1_err"] == 8.08 and record["stored_top1_err"] == pytest.approx(6.93)
    assert 0 <= record["top5_err"] <= record["top1_err"] <= 100


def test_evaluate_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert evaluate.main(["--checkpoint", str(tmp_path / "missing.pth"), "--synthetic", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.pth" in err and err.count("\n") == 1


def test_a_tables_released_checkpoints_are_found_evaluated_stored_and_tabled(tmp_path, capsys):
    import shutil

    from replicate import tables

    released = tmp_path / "released"
    released.mkdir()
    for stem in ("resnet32-s8u1", "resnet56-s16u1x"):  # any file names: the layout identifies the row
        shutil.copy(FIXTURES / f"cifar10-{stem}.pth", released / f"{stem}-download.pth")
    (released / "notes.txt").write_text("not a checkpoint")
    results = tmp_path / "results"
    assert evaluate.main(["table1", "--checkpoints", str(released), "resnet32-s16u1=" +
                          str(FIXTURES / "cifar10-resnet32-s16u1.pth"), "--synthetic", "--batch-size", "64",
                          "--results", str(results), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "stored 3 released result(s)" in captured.err
    for row in ("resnet32-s8u1", "resnet32-s16u1", "resnet56-s16u1-double"):
        assert f"| {row} " in captured.out
    stored = sorted(p.name for p in (results / "table1").iterdir())
    assert len(stored) == 3 and all(name.startswith("released-") for name in stored)
    assert tables.main(["table1", "--results", str(results), "--out", str(tmp_path / "out")]) == 0
    import pandas as pd

    frame = pd.read_csv(tmp_path / "out" / "table1.smoke-paper.csv", keep_default_na=False).set_index("row")
    record = json.loads(next((results / "table1").glob("released-resnet56-s16u1x-*/result.json")).read_text())
    assert frame.loc["resnet56-s16u1-double", "top1_err_released"] == f"{record['selected']['top1_err']:.2f}"
    assert frame.loc["resnet56-s16u1-double", "n"] == 0 and frame.loc["resnet32", "top1_err_released"] == ""
    assert record["kind"] == "released" and record["provenance"]["stored_top1_err"] == pytest.approx(6.93)


def test_a_released_file_goes_to_the_row_that_trains_as_the_paper_did(tmp_path):
    """The ablation has ResNet56-S16U1* without and with orthogonality: the authors' file is the latter's."""
    import shutil

    from replicate import spec

    shutil.copy(FIXTURES / "cifar10-resnet56-s16u1x.pth", tmp_path / "r56.pth")
    ((row, path),) = evaluate.find_checkpoints(spec.load("ablation"), tmp_path, [])
    assert row.id == "c10-double-ortho" and path == tmp_path / "r56.pth"


def test_an_unwritable_results_folder_is_refused_before_any_checkpoint_is_evaluated(tmp_path, capsys,
                                                                                    monkeypatch):
    """--results a file, under a file, a file in the table's place, or read-only: one line, exit 2, first."""
    import os

    def never(*args, **kwargs):
        raise AssertionError("evaluated before the results folder was checked")

    monkeypatch.setattr(evaluate, "evaluate_checkpoint", never)
    (tmp_path / "file").write_text("")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "table1").write_text("")
    cases = [tmp_path / "file", tmp_path / "file" / "results", tmp_path / "store"]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if not os.access(locked, os.W_OK):  # root writes into read-only folders
        cases.append(locked / "results")
    for results in cases:
        assert evaluate.main(["table1", "--checkpoints", str(FIXTURES), "--synthetic", "--results", str(results),
                              "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
        assert "not a folder" in err or "not writable" in err
