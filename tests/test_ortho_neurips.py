"""The published version's regulariser forms (docs/paper.md: The published version's networks): -Shared
ResNets one pooled mean over the stages' shared 3x3 convolutions; Shared++ ResNets and MobileNetV2 two pooled
means, one per kind of shared convolution, added. Whole Gram matrices, no cross term between the two kinds."""
import pytest
import torch

from replicate.models import create
from replicate.ortho import Orthogonality

# (name, dataset, [per pool: (B shape "rows x cols" of each stage, count = sum of rows^2)])
RESNET_P = (64, 128, 256, 512)
MOBILENET_C = (32, 64, 96, 160)
POOLS = [
    ("ResNet50-Shared", "imagenet", [[(p, 9 * p) for p in RESNET_P]], [348_160]),
    ("ResNet101-Shared", "imagenet", [[(p, 9 * p) for p in RESNET_P]], [348_160]),
    ("ResNet50-Shared++", "imagenet", [[(p, 9 * p) for p in RESNET_P], [(4 * p, p) for p in RESNET_P]],
     [348_160, 5_570_560]),
    ("MobileNetV2-Shared++", "imagenet", [[(6 * c, c) for c in MOBILENET_C], [(c, 6 * c) for c in MOBILENET_C]],
     [1_437_696, 39_936]),
    ("MobileNetV2-Shared++", "cifar100", [[(6 * c, c) for c in MOBILENET_C], [(c, 6 * c) for c in MOBILENET_C]],
     [1_437_696, 39_936]),
]


def literal(model, pools: int) -> torch.Tensor:
    """Sum over pools of sum_k ||B_k B_kᵀ - I||² / sum_k rows_k², in float64, group by group."""
    total = torch.zeros((), dtype=torch.float64)
    for pool in range(1, pools + 1) if pools > 1 else (0,):
        groups = [g for g in model.shared_bases.groups if g.pool == pool]
        penalty, count = torch.zeros((), dtype=torch.float64), 0
        for group in groups:
            (basis,) = group.bases
            b = basis.weight.detach().double().flatten(1)
            penalty += (b @ b.T - torch.eye(len(b), dtype=torch.float64)).pow(2).sum()
            count += len(b) ** 2
        total += penalty / count
    return total


@pytest.mark.parametrize("name,dataset,shapes,counts", POOLS, ids=[f"{n}@{d}" for n, d, *_ in POOLS])
def test_pooled_means_have_the_stated_denominators(name, dataset, shapes, counts):
    torch.manual_seed(0)
    model = create(name, dataset)
    regulariser = Orthogonality(model)
    assert regulariser.counts == counts
    for pool, pool_shapes in enumerate(shapes, 1 if len(shapes) > 1 else 0):
        found = [tuple(g.bases[0].weight.flatten(1).shape) for g in model.shared_bases.groups if g.pool == pool]
        assert found == pool_shapes
    with torch.no_grad():
        for basis in model.shared_bases.values():
            basis.weight.add_(0.01 * torch.randn_like(basis.weight))
    assert regulariser().item() == pytest.approx(literal(model, len(shapes)).item(), rel=1e-5)


def test_resnet_shared_plus_plus_starts_at_the_non_square_floor():
    """S_k,2 (4p x p, orthonormal columns) sits at ||BBᵀ - I||² = 4p - p from initialisation: R₂ = 3Σp / count,
    and its gradient is zero there; S_k,1 starts orthonormal (R₁ at rounding level)."""
    torch.manual_seed(0)
    model = create("ResNet50-Shared++", "imagenet")
    regulariser = Orthogonality(model)
    first, second = regulariser.pool_values()
    assert first.item() < 1e-10
    assert second.item() == pytest.approx(3 * sum(RESNET_P) / 5_570_560, rel=1e-5)  # 5.170e-4
    assert second.item() == pytest.approx(5.170e-4, abs=1e-7)
    regulariser().backward()
    for k in range(1, 5):
        assert model.shared_bases[f"stage{k}_2"].weight.grad.abs().max().item() < 1e-6


def test_mobilenet_expansion_floor_is_orthonormal_columns():
    """A 6C x C expansion cannot have orthonormal rows: the least R₁ is 5ΣC / 1 437 696, reached by
    orthonormal columns (the authors do not initialise it so: R₁ starts above the floor)."""
    torch.manual_seed(0)
    model = create("MobileNetV2-Shared++", "cifar100")
    regulariser = Orthogonality(model)
    first, _ = regulariser.pool_values()
    floor = 5 * sum(MOBILENET_C) / 1_437_696
    assert floor == pytest.approx(1.224e-3, abs=1e-6) and first.item() > floor
    with torch.no_grad():
        for k in range(1, 5):
            torch.nn.init.orthogonal_(model.shared_bases[f"stage{k}_1"].weight)
    assert regulariser.pool_values()[0].item() == pytest.approx(floor, rel=1e-5)


def test_one_pool_models_are_unchanged():
    torch.manual_seed(0)
    model = create("ResNet34-S16U1*", "cifar100")
    regulariser = Orthogonality(model)
    assert len(regulariser.counts) == 1 and regulariser.counts[0] == regulariser.count


@pytest.mark.parametrize("seed", [0, 1])
def test_mobilenet_starts_where_the_authors_network_starts(seed):
    """PyTorch's default init of the shared 1x1 convs gives R₁ ≈ 1.63e-3 and R₂ ≈ 4.09e-3 (measured on the
    authors' network); an orthogonal or other init would not."""
    torch.manual_seed(seed)
    first, second = Orthogonality(create("MobileNetV2-Shared++", "imagenet")).pool_values()
    assert first.item() == pytest.approx(1.63e-3, rel=0.01) and second.item() == pytest.approx(4.09e-3, rel=0.01)
