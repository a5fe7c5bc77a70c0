"""The zoo against docs/paper.md (The method; The networks): sizes, structure, initialisation, registry errors."""
import pytest
import torch
from torch import nn

from replicate.complexity import count_macs, count_params
from replicate.models import DecomposedConv, ModelError, create, list_models, parse

# (name, dataset, params, conv+linear MACs or None): docs/paper.md: The networks and its baselines paragraph.
SIZES = [
    ("ResNet32-S8U1", "cifar10", 150_666, 47_628_928),
    ("ResNet32-S16U1", "cifar10", 197_258, 79_086_208),
    ("ResNet32-S16U1*", "cifar10", 245_642, 79_086_208),
    ("ResNet56-S8U1", "cifar10", 201_850, 83_018_368),
    ("ResNet56-S16U1", "cifar10", 270_842, 145_932_928),
    ("ResNet56-S16U1*", "cifar10", 319_226, 145_932_928),
    ("ResNet34-S8U1", "cifar100", 5_865_428, 395_036_672),
    ("ResNet34-S16U1", "cifar100", 6_485_844, 520_865_792),
    ("ResNet34-S32U1", "cifar100", 7_726_676, 772_524_032),
    ("DenseNet121-S16U1", "cifar100", 5_084_504, 704_212_992),
    ("ResNeXt50-S64U4", "cifar100", 19_333_380, 1_179_000_832),
    ("MobileNetV2-Shared", "cifar100", 2_163_812, 67_356_736),
    ("ResNet34-S32U1", "imagenet", 8_196_056, 2_478_804_992),
    ("ResNet34-S32U1*", "imagenet", 9_762_776, 2_478_804_992),
    ("ResNet34-S48U1*", "imagenet", 11_786_968, 3_249_508_352),
    ("ResNet34-S48U1", "imagenet", 9_436_888, 3_249_508_352),
    ("MobileNetV2-Shared", "imagenet", 3_243_080, 313_619_328),
    ("ResNet32", "cifar10", 464_154, None),
    ("ResNet56", "cifar10", 853_018, None),
    ("ResNet110", "cifar10", 1_727_962, None),
    ("ResNet18", "cifar100", 11_220_132, None),
    ("ResNet34", "cifar100", 21_328_292, None),
    ("ResNet50", "cifar100", 23_705_252, None),
    ("DenseNet121", "cifar100", 7_048_548, None),
    ("ResNeXt50", "cifar100", 23_177_124, None),
    ("MobileNetV2", "cifar100", 2_428_004, None),
    ("ResNet34", "imagenet", 21_797_672, None),
    ("MobileNetV2", "imagenet", 3_507_272, None),
]


@pytest.mark.parametrize("name,dataset,params,macs", SIZES, ids=[f"{n}@{d}" for n, d, *_ in SIZES])
def test_published_sizes_are_reproduced_exactly(name, dataset, params, macs):
    model = create(name, dataset)
    assert count_params(model) == params
    if macs is not None and dataset != "imagenet":
        assert count_macs(model, 32)[1] == macs


@pytest.mark.parametrize("name,dataset,params,macs", [s for s in SIZES if s[1] == "imagenet" and s[3]],
                         ids=lambda v: str(v))
def test_imagenet_conv_linear_macs(name, dataset, params, macs):
    assert count_macs(create(name, dataset), 224)[1] == macs


@pytest.mark.parametrize("name,dataset,size,classes", [
    ("ResNet20", "cifar10", 32, 10), ("ResNet56-Shared", "cifar10", 32, 10), ("ResNet32-U1", "cifar10", 32, 10),
    ("ResNet32-S16", "cifar10", 32, 10), ("ResNet18-S8U1*", "cifar100", 32, 100),
    ("DenseNet121-S16U1", "cifar100", 32, 100), ("ResNeXt50-S64U4", "cifar100", 32, 100),
    ("MobileNetV2-Shared", "cifar100", 32, 100), ("ResNet34-S32U1*", "imagenet", 64, 1000),
    ("ResNeXt50", "imagenet", 64, 1000), ("DenseNet121", "imagenet", 64, 1000),
])
def test_every_family_runs_forward_and_backward(name, dataset, size, classes):
    torch.manual_seed(0)
    model = create(name, dataset)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, classes)
    out.sum().backward()
    for group in model.shared_bases.groups:
        used = bool(group.users)  # DenseNet's basis 4 is never called (docs/paper.md: The networks)
        for basis in group.bases:
            assert (basis.weight.grad is not None and basis.weight.grad.abs().sum() > 0) == used


def test_densenet_reproduces_the_unused_fourth_basis_or_fixes_it_on_request():
    from replicate.models.densenet import DenseNet
    from replicate.models import parse

    quirk = create("DenseNet121-S16U1", "cifar100")
    assert [len(g.users) for g in quirk.shared_bases.groups] == [6, 12, 40, 0]  # calls per forward, docs/paper.md: The networks
    fixed = DenseNet((6, 12, 24, 16), "cifar100", 100, parse("DenseNet121-S16U1", "cifar100").layout,
                     reuse_basis3_in_block4=False)
    assert [len(g.users) for g in fixed.shared_bases.groups] == [6, 12, 24, 16]


def test_fused_basis_equals_two_convolutions_plus_concat():
    torch.manual_seed(0)
    shared = nn.Conv2d(16, 8, 3, padding=1, bias=False)
    conv = DecomposedConv(16, 16, unique_rank=2, shared=shared, basis_norm=False, coefficients=False)
    x = torch.randn(4, 16, 9, 9, requires_grad=True)
    fused = conv(x)
    reference = torch.cat([conv.unique(x), shared(x)], dim=1)
    assert (fused - reference).abs().max() <= 1e-5
    grads_fused = torch.autograd.grad(fused.square().sum(), [x, conv.unique.weight, shared.weight])
    grads_reference = torch.autograd.grad(reference.square().sum(), [x, conv.unique.weight, shared.weight])
    for a, b in zip(grads_fused, grads_reference):
        assert (a - b).abs().max() <= 1e-5


def test_grouped_parts_are_not_fused_but_still_concatenated_unique_first():
    shared = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
    conv = DecomposedConv(8, 8, unique_rank=4, unique_groups=4, shared=shared, basis_norm=False,
                          coefficients=False)
    x = torch.randn(1, 8, 5, 5)
    assert torch.equal(conv(x)[:, :4], conv.unique(x)) and torch.equal(conv(x)[:, 4:], shared(x))


@pytest.mark.parametrize("name,bases,calls", [("ResNet32-S16U1", 3, 8), ("ResNet32-S16U1*", 6, 4),
                                              ("ResNet56-Shared", 6, 8)])
def test_a_shared_basis_is_one_tensor(name, bases, calls):
    model = create(name, "cifar10")
    ids = [id(p) for p in model.parameters()]
    assert len(ids) == len(set(ids))
    shared_keys = [k for k in model.state_dict() if k.startswith("shared_bases.")]
    assert len(shared_keys) == bases
    basis = model.shared_bases["stage1"] if bases == 3 else model.shared_bases["stage1_1"]
    users = [m for m in model.modules() if isinstance(m, DecomposedConv) and m.shared is basis]
    assert len(users) == calls  # docs/paper.md: The networks: 2(n-1) calls Single, n-1 each Double


def test_shared_bases_start_orthonormal_and_double_bases_mutually_orthogonal():
    torch.manual_seed(0)
    single = create("ResNet34-S16U1", "cifar100").shared_bases["stage3"].weight.flatten(1)
    assert torch.allclose(single @ single.T, torch.eye(64), atol=1e-5)
    model = create("ResNet56-S16U1*", "cifar10")
    first, second = (model.shared_bases[f"stage2_{i}"].weight.flatten(1) for i in (1, 2))
    joint = torch.cat([first, second])
    assert torch.allclose(joint @ joint.T, torch.eye(64), atol=1e-5)
    assert (first @ second.T).abs().max() < 1e-5


def test_resnet_convs_are_kaiming_fan_out_and_unique_rows_are_not_normalised():
    torch.manual_seed(0)
    model = create("ResNet110-S16U1", "cifar10")
    coefficient_weights = torch.cat([m.coefficients.weight.flatten() for m in model.modules()
                                     if isinstance(m, DecomposedConv) and m.coefficients.out_channels == 64])
    assert coefficient_weights.var().item() == pytest.approx(2 / 64, rel=0.05)
    unique = next(m.unique.weight for m in model.modules() if isinstance(m, DecomposedConv))
    assert unique.flatten(1).pow(2).sum(1).item() == pytest.approx(2 * 16 / 1, rel=0.5)  # ~2C/u (docs/paper.md: The method)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in model.modules()
               if isinstance(m, nn.BatchNorm2d))


def test_sharing_depth_creates_one_basis_per_run_of_blocks():
    whole = create("ResNet56-S16U1", "cifar10")
    by_two = create("ResNet56-S16U1", "cifar10", sharing_depth=2)
    by_one = create("ResNet56-S16U1", "cifar10", sharing_depth=1)
    assert len(whole.shared_bases) == 3 and len(by_two.shared_bases) == 12 and len(by_one.shared_bases) == 24
    extra_bases = 16 * 16 * 9 + 32 * 32 * 9 + 64 * 64 * 9
    assert count_params(by_two) - count_params(whole) == 3 * extra_bases
    assert parse("ResNet56-S16U1", "cifar10", sharing_depth=8).layout == parse(
        "ResNet56-S16U1", "cifar10").layout.__class__(**{**parse("ResNet56-S16U1", "cifar10").layout.__dict__,
                                                       "depth": 8})


def test_naive_sharing_shares_two_whole_convolutions_per_stage():
    model = create("ResNet56-Shared", "cifar10")
    shapes = sorted(tuple(b.weight.shape) for b in model.shared_bases.values())
    assert shapes == sorted([(c, c, 3, 3) for c in (16, 32, 64) for _ in range(2)])
    original = create("ResNet56", "cifar10")
    per_block = 2 * (16 * 16 * 9 + 32 * 32 * 9 + 64 * 64 * 9)
    assert count_params(original) - count_params(model) == 7 * per_block


def test_batchnorm_ablation_removes_three_unshared_batchnorms_per_block():
    full = create("ResNet34-S16U1", "cifar100")
    ablated = create("ResNet34-S16U1", "cifar100", unshared_bn=False)
    bn_count = lambda m: sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert bn_count(full) - bn_count(ablated) == 3 * 12  # 12 decomposed blocks
    ablated(torch.randn(2, 3, 32, 32)).sum().backward()


def test_names_are_case_insensitive_and_canonical():
    assert create("resnet56-s16u1*", "cifar10").config.name == "ResNet56-S16U1*"
    assert create("mobilenetv2-shared", "imagenet").config.name == "MobileNetV2-Shared"
    assert "ResNet56-S16U1*" in list_models("cifar10", "resnet56-*")


@pytest.mark.parametrize("name,dataset,fragment", [
    ("ResNet57", "cifar10", "6n+2"),
    ("ResNet56-S0U1", "cifar10", "ranks must be >= 1"),
    ("ResNeXt50-S16U1", "cifar100", "group count 0"),
    ("ResNeXt50-S12U4", "cifar100", "group count 3"),
    ("DenseNet121-S16U1*", "cifar100", "no double variant"),
    ("MobileNetV2-S16U1", "cifar100", "no single variant"),
    ("ResNet50-S16U1", "cifar100", "baseline only"),
    ("DenseNet121", "cifar10", "not in the zoo for cifar10"),
    ("VGG16", "cifar100", "unknown model name"),
    ("ResNet34-X3", "cifar100", "unknown variant"),
    ("ResNet34", "mnist", "unknown dataset"),
])
def test_bad_names_give_one_line_errors_with_suggestions(name, dataset, fragment):
    with pytest.raises(ModelError) as error:
        create(name, dataset)
    message = str(error.value)
    assert fragment in message and "\n" not in message
    if "dataset" not in fragment:
        assert "closest valid names" in message or "valid names include" in message


def test_sharing_depth_is_rejected_where_it_means_nothing():
    with pytest.raises(ModelError, match="sharing depth"):
        create("ResNet56", "cifar10", sharing_depth=2)
    with pytest.raises(ModelError, match="sharing depth"):
        create("ResNet56-S16U1", "cifar10", sharing_depth=0)


def test_a_model_spec_is_canonical_validated_and_carries_its_options():
    from replicate.models import ModelSpec

    spec = ModelSpec("resnet56-s16u1*", "cifar10")
    assert spec == ModelSpec("ResNet56-S16U1*", "cifar10") and spec.name == "ResNet56-S16U1*"
    deep = ModelSpec("ResNet56-S16U1", "cifar10", sharing_depth=2)
    assert deep != ModelSpec("ResNet56-S16U1", "cifar10") and deep.label == "ResNet56-S16U1, sharing depth 2"
    assert deep.at_depth(20) == ModelSpec("ResNet20-S16U1", "cifar10", sharing_depth=2)
    assert create(deep).spec == deep and len(create(deep).shared_bases) == 12
    with pytest.raises(ModelError, match="6n\\+2"):
        ModelSpec("ResNet57", "cifar10")


def test_a_new_family_is_a_declaration_and_a_builder(monkeypatch):
    from replicate.models import registry
    from replicate.zoo import identity

    tiny = identity.Family("tinynet", "TinyNet", frozenset(), examples=lambda dataset: ["TinyNet1"],
                           problem=lambda config: None, layout=identity.default_layout)
    monkeypatch.setitem(identity.FAMILIES, "tinynet", tiny)
    monkeypatch.setitem(registry.BUILDERS, "tinynet", lambda config: nn.Linear(1, config.num_classes))
    model = create("tinynet1", "cifar10")
    assert model.spec.name == "TinyNet1" and model.out_features == 10 and "TinyNet1" in list_models("cifar10")
    with pytest.raises(ModelError, match="TinyNet has no single variant"):
        create("TinyNet1-S4U1", "cifar10")
