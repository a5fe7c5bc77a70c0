"""The orthogonality regulariser against a literal implementation of docs/paper.md: The orthogonality regulariser and its reference counts."""
import itertools

import pytest
import torch

from replicate.models import create
from replicate.ortho import Orthogonality


def literal_r(model, include_unique: bool) -> torch.Tensor:
    """docs/paper.md: The orthogonality regulariser entry by entry: B, P = (BBᵀ−I)², chosen entries summed, one pooled mean."""
    total, count = torch.zeros((), dtype=torch.float64), 0
    for group in model.shared_bases.groups:
        shared = [row for b in group.bases for row in b.weight.detach().double().flatten(1)]
        uniques = [u.detach().double().flatten(1) for u in group.unique_weights()] if include_unique else []
        rows = shared + [row for u in uniques for row in u]
        m = len(shared)
        for i, j in itertools.product(range(m), range(len(rows))):
            total += (rows[i] @ rows[j] - float(i == j)) ** 2
            count += 1
        for u in uniques:
            for i, j in itertools.product(range(len(u)), repeat=2):
                total += (u[i] @ u[j] - float(i == j)) ** 2
                count += 1
    return total / count


def _perturb(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("name,dataset,mode", [
    ("ResNet20-S4U1", "cifar10", "cifar10"), ("ResNet20-S4U1*", "cifar10", "cifar10"),
    ("ResNet20-S4", "cifar10", "cifar10"), ("ResNet20-Shared", "cifar10", "cifar10"),
    ("ResNet20-S4U2", "cifar10", "shared"), ("ResNet18-S2U1", "cifar100", "shared"),
    ("ResNet18-S2U1*", "imagenet", "shared"),
])
def test_vectorised_regulariser_equals_the_literal_formula(name, dataset, mode):
    model = create(name, dataset)
    _perturb(model)
    fast = Orthogonality(model, mode)().double()
    assert fast.item() == pytest.approx(literal_r(model, mode == "cifar10").item(), rel=1e-5)


def test_sharing_depth_groups_are_pooled_like_stages():
    model = create("ResNet20-S4U1", "cifar10", sharing_depth=1)
    _perturb(model)
    assert len(model.shared_bases.groups) == 6
    assert Orthogonality(model)().item() == pytest.approx(literal_r(model, True).item(), rel=1e-5)


@pytest.mark.parametrize("name,dataset,count", [
    ("ResNet32-S16U1", "cifar10", 8_232), ("ResNet32-S16U1*", "cifar10", 27_048),
    ("ResNet32-S16", "cifar10", 21_504), ("ResNet32-S8U1", "cifar10", 2_856),
    ("ResNet56-S16U1*", "cifar10", 32_592), ("ResNet34-S16U1", "cifar100", 21_760),
    ("ResNet34-S32U1*", "imagenet", 348_160), ("ResNet34-S32U1", "imagenet", 87_040),
    ("DenseNet121-S16U1", "cifar100", 1_024), ("ResNeXt50-S64U4", "cifar100", 348_160),
    ("MobileNetV2-Shared", "imagenet", 1_437_696),
])
def test_denominators_match_the_reference_counts(name, dataset, count):
    assert Orthogonality(create(name, dataset)).count == count


def test_zero_for_orthonormal_bases_and_default_definition_per_dataset():
    model = create("ResNet34-S16U1", "cifar100")
    assert Orthogonality(model).mode == "shared"
    assert Orthogonality(model)().item() < 1e-10
    cifar10 = create("ResNet32-S16U1", "cifar10")
    assert Orthogonality(cifar10).mode == "cifar10"
    with torch.no_grad():  # make every unique basis orthonormal too: then R is zero in the CIFAR-10 form
        for conv in cifar10.shared_bases.groups[0].users:
            conv.unique.weight.copy_(torch.nn.functional.normalize(conv.unique.weight.flatten(1), dim=1)
                                     .view_as(conv.unique.weight))
    assert Orthogonality(cifar10)().item() > 0  # unit unique rows are not orthogonal to the shared ones


def test_magnitude_at_initialisation_matches_the_reference():
    torch.manual_seed(0)
    assert 6.0 < Orthogonality(create("ResNet32-S16U1", "cifar10"))().item() < 7.5  # docs/paper.md: The orthogonality regulariser: 6.5–6.8
    assert 3.0 < Orthogonality(create("ResNet56-S16U1*", "cifar10"))().item() < 3.7  # 3.3–3.4


def test_gradient_reaches_shared_and_unique_bases():
    model = create("ResNet20-S4U1", "cifar10")
    Orthogonality(model)().backward()
    assert model.shared_bases["stage1"].weight.grad.abs().sum() > 0
    unique = model.shared_bases.groups[0].users[0].unique.weight
    assert unique.grad.abs().sum() > 0


def test_models_without_shared_bases_and_bad_modes_are_refused():
    with pytest.raises(ValueError, match="no shared bases"):
        Orthogonality(create("ResNet20", "cifar10"))()
    with pytest.raises(ValueError, match="unknown orthogonality mode"):
        Orthogonality(create("ResNet20-S4U1", "cifar10"), "both")
