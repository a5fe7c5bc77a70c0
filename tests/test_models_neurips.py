"""The published (NeurIPS 2021) version's networks against their description (docs/paper.md: The published
version's networks): ResNet50/101 with whole-convolution sharing in bottlenecks (-Shared, -Shared++) and
MobileNetV2-Shared++ (two shared 1x1 convolutions per block, channel attention on ImageNet).

The counts below were measured on the authors' constructors at their NeurIPS state, not on our networks:
parameters, and fvcore's multiply-accumulates for one image in eval mode by operator (conv includes the
attention's Conv1d and the CIFAR 1x1-conv classifier; batch-norm counts 2 per element, average pooling 1 per
input element; the total is their sum).
"""
import pytest
import torch
from torch import nn

from replicate.complexity import count_macs, count_params
from replicate.models import DecomposedConv, ModelError, create, list_models

# name, dataset, params, conv, linear, batch-norm, pooling, fvcore total
COUNTS = [
    ("ResNet34-S48U1*", "imagenet", 11_786_968, 3_248_996_352, 512_000, 10_549_504, 25_088, 3_260_082_944),
    ("ResNet50-Shared", "imagenet", 20_506_664, 4_087_136_256, 2_048_000, 22_227_968, 100_352, 4_111_512_576),
    ("ResNet50-Shared++", "imagenet", 18_262_056, 4_087_136_256, 2_048_000, 22_227_968, 100_352, 4_111_512_576),
    ("ResNet50", "imagenet", 25_557_032, 4_087_136_256, 2_048_000, 22_227_968, 100_352, 4_111_512_576),
    ("ResNet101-Shared", "imagenet", 29_471_784, 7_799_357_440, 2_048_000, 32_463_872, 100_352, 7_833_969_664),
    ("ResNet101-Shared++", "imagenet", 22_770_728, 7_799_357_440, 2_048_000, 32_463_872, 100_352,
     7_833_969_664),
    ("ResNet101", "imagenet", 44_549_160, 7_799_357_440, 2_048_000, 32_463_872, 100_352, 7_833_969_664),
    ("MobileNetV2-Shared", "imagenet", 3_243_080, 312_339_328, 1_280_000, 14_159_040, 62_720, 327_841_088),
    ("MobileNetV2-Shared++", "imagenet", 2_978_905, 312_341_120, 1_280_000, 14_159_040, 203_840, 327_984_000),
    ("MobileNetV2-SharedDouble", "imagenet", 2_978_888, 312_339_328, 1_280_000, 14_159_040, 62_720,
     327_841_088),
    ("MobileNetV2", "imagenet", 3_507_272, 312_339_328, 1_280_000, 14_159_040, 62_720, 327_841_088),
    ("MobileNetV2-Shared++", "cifar100", 1_899_620, 67_356_736, 0, 1_829_216, 32_000, 69_217_952),
    ("MobileNetV2-Shared", "cifar100", 2_163_812, 67_356_736, 0, 1_829_216, 32_000, 69_217_952),
]
BN_PARAMS = {"ResNet50": 53_120, "ResNet101": 105_344, "MobileNetV2@imagenet": 34_176,
             "MobileNetV2@cifar100": 35_360}
FVCORE_KINDS = {"conv": ("conv",), "linear": ("linear", "addmm"), "bn": ("batch_norm",),
                "pool": ("adaptive_avg_pool2d", "avg_pool2d")}


def fvcore_by_kind(model: nn.Module, size: int) -> dict[str, int]:
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, 3, size, size))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    ops = analysis.by_operator()
    counts = {kind: sum(ops.get(op, 0) for op in names) for kind, names in FVCORE_KINDS.items()}
    counts["total"] = int(analysis.total())
    return counts


@pytest.mark.parametrize("name,dataset,params,conv,linear,bn,pool,total", COUNTS,
                         ids=[f"{n}@{d}" for n, d, *_ in COUNTS])
def test_counts_equal_the_authors_networks(name, dataset, params, conv, linear, bn, pool, total):
    torch.manual_seed(0)
    model = create(name, dataset)
    assert count_params(model) == params
    size = 224 if dataset == "imagenet" else 32
    assert fvcore_by_kind(model, size) == {"conv": conv, "linear": linear, "bn": bn, "pool": pool, "total": total}
    assert count_macs(model, size) == (total, conv + linear)  # what the suite reports is the same count


@pytest.mark.parametrize("base,dataset,names", [
    ("ResNet50", "imagenet", ("ResNet50", "ResNet50-Shared", "ResNet50-Shared++")),
    ("ResNet101", "imagenet", ("ResNet101", "ResNet101-Shared", "ResNet101-Shared++")),
    ("MobileNetV2@imagenet", "imagenet", ("MobileNetV2", "MobileNetV2-Shared", "MobileNetV2-Shared++",
                                          "MobileNetV2-SharedDouble")),
    ("MobileNetV2@cifar100", "cifar100", ("MobileNetV2", "MobileNetV2-Shared", "MobileNetV2-Shared++")),
])
def test_batchnorm_parameters(base, dataset, names):
    for name in names:
        model = create(name, dataset)
        bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
        assert bn == BN_PARAMS[base], name


def test_parameters_saved_by_whole_convolution_sharing():
    """original - c * sum_k (n_k - 2) p_k^2, c = 9 (one shared 3x3) or 13 (and the 1x1 expansion)."""
    for depth, blocks in ((50, (3, 4, 6, 3)), (101, (3, 4, 23, 3))):
        original = count_params(create(f"ResNet{depth}", "imagenet"))
        saved = sum((n - 2) * (64 * 2 ** k) ** 2 for k, n in enumerate(blocks))
        assert original - count_params(create(f"ResNet{depth}-Shared", "imagenet")) == 9 * saved
        assert original - count_params(create(f"ResNet{depth}-Shared++", "imagenet")) == 13 * saved


@pytest.mark.parametrize("name,shapes,calls", [
    ("ResNet50-Shared", [(64, 64, 3, 3), (128, 128, 3, 3), (256, 256, 3, 3), (512, 512, 3, 3)], [2, 3, 5, 2]),
    ("ResNet101-Shared", [(64, 64, 3, 3), (128, 128, 3, 3), (256, 256, 3, 3), (512, 512, 3, 3)], [2, 3, 22, 2]),
    ("ResNet50-Shared++", [(64, 64, 3, 3), (256, 64, 1, 1), (128, 128, 3, 3), (512, 128, 1, 1),
                           (256, 256, 3, 3), (1024, 256, 1, 1), (512, 512, 3, 3), (2048, 512, 1, 1)],
     [2, 2, 3, 3, 5, 5, 2, 2]),
])
def test_each_shared_convolution_is_one_tensor_called_by_every_non_first_block(name, shapes, calls):
    model = create(name, "imagenet")
    bases = list(model.shared_bases.values())
    assert [tuple(b.weight.shape) for b in bases] == shapes
    ids = [id(p) for p in model.parameters()]
    assert len(ids) == len(set(ids))
    users = [[m for m in model.modules() if isinstance(m, DecomposedConv) and m.shared is b] for b in bases]
    assert [len(u) for u in users] == calls
    assert all(m.basis_bn is None and m.coefficients is None and m.unique is None for u in users for m in u)


def test_resnet_bottleneck_initialisation():
    """Kaiming fan-out convs, unit BNs (no zero-gamma), then each shared tensor orthogonal on its own."""
    torch.manual_seed(0)
    model = create("ResNet50-Shared++", "imagenet")
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
               for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    for k, p in enumerate((64, 128, 256, 512), 1):
        first = model.shared_bases[f"stage{k}_1"].weight.flatten(1)  # p x 9p: orthonormal rows
        assert torch.allclose(first @ first.T, torch.eye(p), atol=1e-5)
        second = model.shared_bases[f"stage{k}_2"].weight.flatten(1)  # 4p x p: orthonormal columns
        assert torch.allclose(second.T @ second, torch.eye(p), atol=1e-5)
    conv = model.stages[3][0].conv1.weight  # own 1x1 2048->... Kaiming fan-out: var 2 / (out * k * k)
    assert conv.var().item() == pytest.approx(2 / conv.shape[0], rel=0.05)


def test_mobilenet_shared_plus_plus_is_not_orthogonally_initialised_and_has_pytorch_defaults():
    torch.manual_seed(0)
    model = create("MobileNetV2-Shared++", "imagenet")
    expansion = model.shared_bases["stage4_1"].weight.flatten(1)  # 960 x 160, default uniform init
    bound = 1 / 160 ** 0.5
    assert expansion.abs().max() <= bound and expansion.abs().max() > 0.9 * bound
    attention = [m for m in model.modules() if type(m).__name__ == "ChannelAttention"]
    assert [m.conv.weight.shape[-1] for m in attention] == [1, 1, 1, 1, 1, 3, 3, 3, 3]


@pytest.mark.parametrize("name,dataset,size,classes", [
    ("ResNet50-Shared", "imagenet", 64, 1000), ("ResNet50-Shared++", "imagenet", 64, 1000),
    ("MobileNetV2-Shared++", "imagenet", 64, 1000), ("MobileNetV2-SharedDouble", "imagenet", 64, 1000),
    ("MobileNetV2-Shared++", "cifar100", 32, 100),
])
def test_forward_and_backward_reach_every_shared_tensor(name, dataset, size, classes):
    torch.manual_seed(0)
    model = create(name, dataset)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, classes)
    out.sum().backward()
    for basis in model.shared_bases.values():
        assert basis.weight.grad is not None and basis.weight.grad.abs().sum() > 0


def test_channel_attention_is_the_described_gate():
    """y_c * sigmoid(conv1d over channels of the spatial means), zero padding, no bias."""
    from replicate.models.mobilenet import ChannelAttention

    torch.manual_seed(0)
    eca = ChannelAttention(3)
    y = torch.randn(2, 5, 4, 4)
    w = eca.conv.weight.view(3)
    m = torch.nn.functional.pad(y.mean((2, 3)), (1, 1))
    a = w[0] * m[:, :-2] + w[1] * m[:, 1:-1] + w[2] * m[:, 2:]
    assert torch.allclose(eca(y), y * torch.sigmoid(a)[:, :, None, None], atol=1e-6)


def test_names_follow_the_printed_labels():
    assert create("resnet50-shared++", "imagenet").config.name == "ResNet50-Shared++"
    assert create("MOBILENETV2-SHAREDDOUBLE", "imagenet").config.name == "MobileNetV2-SharedDouble"
    assert {"ResNet50-Shared", "ResNet50-Shared++", "ResNet101", "ResNet101-Shared", "ResNet101-Shared++",
            "MobileNetV2-Shared++", "MobileNetV2-SharedDouble"} <= set(list_models("imagenet"))
    assert list_models("imagenet").count("ResNet50") == 1
    assert "MobileNetV2-Shared++" in list_models("cifar100")
    assert create("ResNet50", "cifar100").config.family.key == "resnet"  # the CIFAR-100 baseline is unchanged


@pytest.mark.parametrize("name,dataset,fragment", [
    ("ResNet34-Shared++", "imagenet", "no -Shared++ variant"),
    ("ResNet50-S16U1", "imagenet", "no single variant"),
    ("ResNet101", "cifar100", "not in the zoo for cifar100"),
    ("ResNet50-Shared", "cifar100", "baseline only"),
    ("MobileNetV2-SharedDouble", "cifar100", "MobileNetV2-Shared++"),
    ("ResNet152-Shared", "imagenet", "not in the zoo for imagenet"),
])
def test_impossible_names_fail_in_one_line(name, dataset, fragment):
    with pytest.raises(ModelError) as error:
        create(name, dataset)
    assert fragment in str(error.value) and "\n" not in str(error.value)
