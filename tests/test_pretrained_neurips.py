"""The authors' checkpoints of the published (NeurIPS 2021) version: every layout of their README's files
loads, is identified from its keys and shapes alone and is written back exactly; the two test files give
the authors' logits. Test data in fixtures/official-checkpoints-neurips (see its README)."""
import json
import re
from pathlib import Path

import pytest
import torch

from replicate import pretrained
from replicate.models import create
from replicate.pretrained import CheckpointError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official-checkpoints-neurips"
LAYOUTS = json.loads((FIXTURES / "layouts.json").read_text())
NO_ATTENTION = "variant no-eca"  # the ImageNet MobileNetV2-Shared++ as the 2020 code built it


def zoo_name(entry: dict) -> str:
    return "MobileNetV2-SharedDouble" if NO_ATTENTION in entry["commit"] else entry["ours"]


def alias_target(key: str, keys: dict) -> str | None:
    """The model-level key a block's copy of a shared tensor is an alias of (written from the layouts' facts:
    ResNets write ``shared_basis_1``/``_2`` in blocks, MobileNetV2 ``shared_basis1``/``2``, stage s >= 3 -> s-2)."""
    prefix = "module." if key.startswith("module.") else ""
    bare = key.removeprefix(prefix)
    match = re.fullmatch(r"layer(\d)\.\d+\.shared_basis(_\d)?\.weight", bare)
    if match:
        return f"{prefix}shared_basis_{match[1]}{match[2] or ''}.weight"
    match = re.fullmatch(r"stage(\d)\.\d+\.shared_basis([12])\.weight", bare)
    if match:
        stage = int(match[1]) - 2
        double = f"{prefix}shared_basis_{stage}_{match[2]}.weight"
        return double if double in keys else f"{prefix}shared_basis_{stage}.weight"
    return None


def random_state(entry: dict) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(len(entry["keys"]))
    keys = entry["keys"]
    state = {key: torch.tensor(7) if key.endswith("num_batches_tracked") else torch.randn(shape, generator=g)
             for key, shape in keys.items() if alias_target(key, keys) is None}
    aliases = {key: state[alias_target(key, keys)] for key in keys if key not in state}
    assert aliases and all("shared_basis" in key for key in aliases)
    state.update(aliases)
    return {key: state[key] for key in keys}


@pytest.mark.parametrize("entry", LAYOUTS, ids=[f"{e['dataset']}-{zoo_name(e)}" for e in LAYOUTS])
def test_our_networks_have_the_authors_layout_keys_and_shapes(entry):
    """Built from the description, our network in the authors' names is their state dict exactly."""
    with torch.device("meta"):
        model = create(zoo_name(entry), entry["dataset"])
    layout = pretrained.authors_layout(model)
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert [layout.prefix + theirs for theirs, _ in layout.keys] == list(entry["keys"])
    assert {layout.prefix + theirs: shapes[ours] for theirs, ours in layout.keys} == entry["keys"]
    aliases = {key for key in entry["keys"] if alias_target(key, entry["keys"])}
    assert {layout.prefix + key for keys in layout.aliases().values() for key in keys} == \
        aliases | {alias_target(key, entry["keys"]) for key in aliases}


@pytest.mark.parametrize("entry", LAYOUTS, ids=[f"{e['dataset']}-{zoo_name(e)}" for e in LAYOUTS])
def test_every_layout_is_identified_loads_and_round_trips(entry, tmp_path):
    state = random_state(entry)
    source, copy = tmp_path / "theirs.pth", tmp_path / "ours-as-theirs.pth"
    torch.save({"net_state_dict": state, "acc": 76.05, "epoch": 9}, source)
    assert pretrained.identify(state) == (zoo_name(entry), entry["dataset"])
    model = pretrained.load(source)
    assert (model.checkpoint.model, model.checkpoint.dataset) == (zoo_name(entry), entry["dataset"])
    assert model.checkpoint.data_parallel == (entry["key_prefix"] == "module.")

    pretrained.save(model, copy, layout="authors", acc=76.05, epoch=9)
    written = torch.load(copy, map_location="cpu", weights_only=True)["net_state_dict"]
    assert list(written) == list(entry["keys"])
    for key, value in written.items():
        assert torch.equal(value, state[key]), key
        target = alias_target(key, entry["keys"])
        if target:  # an alias is the shared tensor itself, stored once
            assert value.untyped_storage().data_ptr() == written[target].untyped_storage().data_ptr(), key


@pytest.mark.parametrize("dataset", ["imagenet", "cifar100"])
@pytest.mark.parametrize("by_name", [True, False], ids=["named", "identified"])
def test_fixtures_reproduce_the_authors_logits(dataset, by_name):
    expected = torch.load(FIXTURES / f"{dataset}-mobilenetv2-sharedpp.logits.pt", weights_only=True)
    model = pretrained.load(FIXTURES / f"{dataset}-mobilenetv2-sharedpp.pth",
                            "MobileNetV2-Shared++" if by_name else None)
    assert (model.checkpoint.model, model.checkpoint.dataset) == ("MobileNetV2-Shared++", dataset)
    assert not model.training
    with torch.no_grad():
        logits = model(expected["input"])
    reference = expected["logits"]
    assert logits.shape == reference.shape and logits.dtype == torch.float32
    assert (logits - reference).abs().max().item() <= 1e-5 * reference.abs().max().item()
    stored = model.checkpoint
    acc, epoch = (71.79, 296) if dataset == "imagenet" else (72.46, 287)  # float32 in the file
    assert stored.acc == pytest.approx(acc) and stored.epoch == epoch
    assert stored.data_parallel == (dataset == "imagenet")


def test_the_imagenet_file_is_not_the_network_without_attention():
    """The check discriminates: the attention-less 2020 network refuses the file, naming the key."""
    with pytest.raises(CheckpointError) as error:
        pretrained.load(FIXTURES / "imagenet-mobilenetv2-sharedpp.pth", "MobileNetV2-SharedDouble")
    message = str(error.value)
    assert "unexpected key 'stage3.1.chan_attention.conv.weight'" in message
    assert message.endswith("it fits MobileNetV2-Shared++ (imagenet)") and "\n" not in message


def test_the_regulariser_sees_what_the_authors_regularise():
    """Two pooled means for Shared++ (3x3 and 1x1 separately), one for -Shared, as their scripts."""
    model = pretrained.load(FIXTURES / "cifar100-mobilenetv2-sharedpp.pth")
    pools = sorted({group.pool for group in model.shared_bases.groups})
    assert pools == [1, 2] and len(model.shared_bases.groups) == 8


@pytest.mark.parametrize("dataset,label,published_err", [
    ("cifar100", "MobileNetV2-SharedDouble", 27.54), ("imagenet", "MobileNetV2-Shared++", 28.21)])
def test_evaluate_finds_the_published_row_of_a_published_version_file(dataset, label, published_err, capsys):
    from replicate import evaluate

    checkpoint = FIXTURES / f"{dataset}-mobilenetv2-sharedpp.pth"
    assert evaluate.main(["--checkpoint", str(checkpoint), "--synthetic", "--batch-size", "64", "--format", "json",
                          "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["model"], record["dataset"], record["label"]) == ("MobileNetV2-Shared++", dataset, label)
    assert record["published_top1_err"] == published_err and record["data"] == "synthetic"
