"""The authors' checkpoints of the published (NeurIPS 2021) version: every layout of their README's files
loads, is identified from its keys and shapes alone and is written back exactly; the two test files give
the authors' logits. Test data in fixtures/official-checkpoints-neurips (see its README)."""
import json
import re
from pathlib import Path

import pytest
import torch

from replicate import released
from replicate.models import create
from replicate.released import CheckpointError

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
    layout = released.authors_layout(model)
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
    assert released.identify(state) == (zoo_name(entry), entry["dataset"])
    model = released.load(source)
    assert (model.checkpoint.model, model.checkpoint.dataset) == (zoo_name(entry), entry["dataset"])
    assert model.checkpoint.data_parallel == (entry["key_prefix"] == "module.")

    released.save(model, copy, layout="authors", acc=76.05, epoch=9)
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
    model = released.load(FIXTURES / f"{dataset}-mobilenetv2-sharedpp.pth",
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
        released.load(FIXTURES / "imagenet-mobilenetv2-sharedpp.pth", "MobileNetV2-SharedDouble")
    message = str(error.value)
    assert "unexpected key 'stage3.1.chan_attention.conv.weight'" in message
    assert message.endswith("it fits MobileNetV2-Shared++ (imagenet)") and "\n" not in message


def test_the_regulariser_sees_what_the_authors_regularise():
    """Two pooled means for Shared++ (3x3 and 1x1 separately), one for -Shared, as their scripts."""
    model = released.load(FIXTURES / "cifar100-mobilenetv2-sharedpp.pth")
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


def _described_resnet(state: dict, blocks: tuple[int, ...], x: torch.Tensor) -> torch.Tensor:
    """The bottleneck ResNet(-Shared, -Shared++) written from its description, on a state dict in the authors'
    names (eval mode): what a block computes, which tensor it calls and where the stride and shortcut are."""
    import torch.nn.functional as F

    def bn(t, key):
        return F.batch_norm(t, state[f"{key}.running_mean"], state[f"{key}.running_var"], state[f"{key}.weight"],
                            state[f"{key}.bias"], False, 0.0, 1e-5)

    def conv(t, key, stride=1):
        weight = state[f"{key}.weight"]
        return F.conv2d(t, weight, None, stride, weight.shape[-1] // 2)

    out = F.max_pool2d(F.relu(bn(F.conv2d(x, state["conv1.weight"], None, 2, 3), "bn1")), 3, 2, 1)
    for k, count in enumerate(blocks, 1):
        for i in range(count):
            p = f"layer{k}.{i}"
            stride = 2 if i == 0 and k > 1 else 1
            if i == 0:
                middle, last = f"{p}.conv2", f"{p}.conv3"
            else:
                double = f"shared_basis_{k}_1.weight" in state
                middle = f"shared_basis_{k}_1" if double else f"shared_basis_{k}"
                last = f"shared_basis_{k}_2" if double else f"{p}.conv3"
            y = F.relu(bn(conv(out, f"{p}.conv1"), f"{p}.bn1"))
            y = F.relu(bn(conv(y, middle, stride), f"{p}.bn2"))
            y = bn(conv(y, last), f"{p}.bn3")
            shortcut = bn(conv(out, f"{p}.shortcut.0", stride), f"{p}.shortcut.1") if i == 0 else out
            out = F.relu(y + shortcut)
    return F.linear(out.mean((2, 3)), state["fc.weight"], state["fc.bias"])


@pytest.mark.parametrize("name", ["ResNet50-Shared", "ResNet50-Shared++"])
def test_the_bottleneck_networks_compute_what_the_description_says(name, tmp_path):
    entry = next(e for e in LAYOUTS if e["ours"] == name)
    state = {key.removeprefix("module."): value for key, value in random_state(entry).items()}
    g = torch.Generator().manual_seed(5)
    for key, value in state.items():  # plausible scales: unit-variance activations, positive variances
        if key.endswith(".weight") and value.dim() > 1:
            value.mul_((2 / value[0].numel()) ** 0.5)
        elif key.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=g) + 0.5)
    path = tmp_path / "file.pth"
    torch.save({"net_state_dict": {"module." + key: value for key, value in state.items()}}, path)
    model = released.load(path)
    assert model.checkpoint.model == name
    x = torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        ours, described = model(x), _described_resnet(state, (3, 4, 6, 3), x)
    assert (ours - described).abs().max().item() <= 1e-5 * described.abs().max().item()
