"""The fast computations equal the straightforward ones: fused basis-BN/coefficients, the whole fused model
against the authors'-style reference (outputs and gradients), the regulariser, and folded inference."""
import copy

import pytest
import torch
from torch import nn

from replicate.bench.reference import ReferenceDecomposedConv, ReferenceOrthogonality, reference_model
from replicate.complexity import count_macs
from replicate.models import DecomposedConv, create, fold
from replicate.models import fused
from replicate.models.blocks import basis_conv
from replicate.models.fold import folding_saves
from replicate.ortho import Orthogonality
from replicate.train import prepare_images, prepare_model

CL = torch.channels_last


def _randomise_norms(model: nn.Module, seed: int = 3) -> None:
    """BN statistics and affine parameters away from their identity initialisation."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.2)
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)


def _layer(rank_unique=1, channels=8):
    torch.manual_seed(0)
    shared = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    conv = DecomposedConv(channels, channels, unique_rank=rank_unique, shared=shared).double()
    shared.double()
    _randomise_norms(conv)
    return conv


def _plain_chain(y, modules, residual, relu):
    out = y
    for module in modules:
        out = module(out)
    if residual is not None:
        out = out + residual
    return torch.relu(out) if relu else out


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("offset", [0.0, 50.0])  # 50: a mean far above the spread (see fused._shifted)
@pytest.mark.parametrize("with_output_bn", [False, True])  # True: the block's BatchNorm taken in as well
@pytest.mark.parametrize("size", [5, 4])  # 4: 64 rows, a multiple of the 16 summed as one row; 5: 100 rows
@pytest.mark.parametrize("epilogue", ["", "relu", "residual+relu", "residual"])  # the block's layer ends
def test_fused_chain_equals_the_modules_one_after_the_other(training, offset, with_output_bn, size, epilogue):
    conv = _layer()
    output_bn = nn.BatchNorm2d(conv.out_channels).double() if with_output_bn else None
    if output_bn is not None:
        _randomise_norms(output_bn, seed=5)
    y = (torch.randn(4, conv.rank, size, size, dtype=torch.float64) + offset).contiguous(memory_format=CL)
    assert fused.applies(y, conv.basis_bn, conv.coefficients, output_bn)
    plain = [copy.deepcopy(m) for m in (conv.basis_bn, conv.coefficients, output_bn) if m is not None]
    ours = [m for m in (conv.basis_bn, conv.coefficients, output_bn) if m is not None]
    for module in ours + plain:
        module.train(training)
    relu = "relu" in epilogue
    residual = torch.randn(4, conv.out_channels, size, size, dtype=torch.float64).contiguous(memory_format=CL) \
        if "residual" in epilogue else None
    res_fused, res_plain = [None, None] if residual is None else [residual.clone().requires_grad_()
                                                                  for _ in range(2)]
    y_fused, y_plain = y.clone().requires_grad_(), y.contiguous().requires_grad_()
    out_fused = fused.norm_coefficients(y_fused, conv.basis_bn, conv.coefficients, output_bn,
                                        residual=res_fused, relu=relu)
    out_plain = _plain_chain(y_plain, plain, res_plain, relu)
    assert out_fused.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out_fused, out_plain, rtol=1e-9, atol=1e-9)
    if relu:
        assert (out_plain == 0).any()  # the ReLU's mask takes part in the gradient check below
    grad = torch.randn_like(out_plain)
    out_fused.backward(grad)
    out_plain.backward(grad)
    torch.testing.assert_close(y_fused.grad, y_plain.grad, rtol=1e-8, atol=1e-9)
    if residual is not None:
        torch.testing.assert_close(res_fused.grad, res_plain.grad, rtol=0, atol=0)
    for mine, theirs in zip(ours, plain):
        for (name, p), q in zip(mine.named_parameters(), theirs.parameters()):
            assert p.grad is not None, name
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-8, msg=lambda m: f"{name}: {m}")
        for (name, b), c in zip(mine.named_buffers(), theirs.buffers()):
            torch.testing.assert_close(b, c, rtol=1e-9, atol=1e-9, msg=lambda m: f"{name}: {m}")
    if output_bn is not None and training:  # changed by the batch, not left at their initial values
        assert int(output_bn.num_batches_tracked) == 1 and int(conv.basis_bn.num_batches_tracked) == 1


@pytest.mark.parametrize("with_output_bn", [False, True])
@pytest.mark.parametrize("epilogue", ["", "residual+relu"])
def test_fused_chain_in_float32_is_as_accurate_as_the_modules_when_the_mean_dwarfs_the_spread(
        with_output_bn, epilogue):
    """Basis responses whose channel means are 100x their standard deviation, in float32.

    Each result of the fused operator and of the modules (basis BN, coefficients, block BN, + residual,
    ReLU) is compared with the modules' in float64 on the same (float32) numbers. Bound: 4x the modules'
    own error, plus 8 float32 roundings (2**-24 each) of the result's largest entry. Two orders of the same
    float32 reductions differ in error by a factor of about 1-3 (measured over seeds); the floor covers results
    that the modules get exactly or by luck (the residual's gradient behind the same ReLU mask; the basis
    BN's bias gradient with the block's BN, zero in exact arithmetic). Moments and products of the unshifted
    responses were 30-220x the modules' error here with the block's BN; without it the modules lose digits
    too (the basis BN's rounded mean stays in the output), so there the bound is loose.
    """
    torch.manual_seed(0)
    rank, channels, shape = 17, 16, (8, 8, 8)
    modules = [nn.BatchNorm2d(rank), nn.Conv2d(rank, channels, 1, bias=False)]
    modules += [nn.BatchNorm2d(channels)] if with_output_bn else []
    _randomise_norms(nn.Sequential(*modules))
    spread = torch.rand(rank) + 0.5
    y = (torch.randn(shape[0], rank, *shape[1:]) + 100) * spread[:, None, None]  # mean 100 x spread
    residual = torch.randn(shape[0], channels, *shape[1:]) if "residual" in epilogue else None
    grad = torch.randn(shape[0], channels, *shape[1:])
    relu = "relu" in epilogue

    def results(dtype, fused_path):
        chain = [copy.deepcopy(m).to(dtype) for m in modules]
        y_in, res_in = [None if t is None else t.to(dtype, copy=True).contiguous(memory_format=CL).requires_grad_()
                        for t in (y, residual)]
        if fused_path:
            assert fused.applies(y_in, *chain[:2], *chain[2:])
            out = fused.norm_coefficients(y_in, *chain[:2], *chain[2:], residual=res_in, relu=relu)
        else:
            out = _plain_chain(y_in, chain, res_in, relu)
        out.backward(grad.to(dtype))
        found = {"output": out.detach(), "y gradient": y_in.grad}
        if res_in is not None:
            found["residual gradient"] = res_in.grad
        for index, module in enumerate(chain):
            found.update({f"{index}.{name} gradient": p.grad for name, p in module.named_parameters()})
            found.update({f"{index}.{name}": b for name, b in module.named_buffers() if b.is_floating_point()})
        return found

    exact, plain, ours = results(torch.float64, False), results(torch.float32, False), results(torch.float32, True)
    if relu:
        assert (exact["output"] == 0).any()
    failures = []
    for key, value in exact.items():
        scale = value.abs().max().item()
        plain_error, our_error = [(found[key].double() - value).abs().max().item() for found in (plain, ours)]
        if our_error > 4 * plain_error + 8 * 2**-24 * scale:
            failures.append(f"{key}: {our_error / scale:.1e} of its largest entry (modules: "
                            f"{plain_error / scale:.1e})")
    assert not failures, "\n".join(failures)


def test_fused_path_only_where_it_is_exact_and_faster():
    conv = _layer()
    y = torch.randn(2, conv.rank, 4, 4, dtype=torch.float64)
    assert not fused.applies(y, conv.basis_bn, conv.coefficients)  # NCHW: the modules run
    assert fused.applies(y.contiguous(memory_format=CL), conv.basis_bn, conv.coefficients)
    assert not fused.applies(y.contiguous(memory_format=CL), None, conv.coefficients)
    block_bn = nn.BatchNorm2d(conv.out_channels).double()
    assert fused.applies(y.contiguous(memory_format=CL), conv.basis_bn, conv.coefficients, block_bn)
    block_bn.eval()  # a block BN in another mode than the basis BN: the modules run
    assert not fused.applies(y.contiguous(memory_format=CL), conv.basis_bn, conv.coefficients, block_bn)
    conv.basis_bn.momentum = None  # cumulative averaging: left to BatchNorm2d
    assert not fused.applies(y.contiguous(memory_format=CL), conv.basis_bn, conv.coefficients)


@pytest.mark.parametrize("kernel", [3, 1])
def test_basis_conv_trains_as_the_equal_transposed_convolution_on_cpu_channels_last(kernel):
    torch.manual_seed(0)
    weight = torch.randn(5, 4, kernel, kernel, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    grad = torch.randn(2, 5, 6, 6, dtype=torch.float64)
    for layout, transposed in [(CL, True), (torch.contiguous_format, False)]:
        inputs = x.contiguous(memory_format=layout).requires_grad_()
        ours = basis_conv(inputs, weight)
        assert ours.grad_fn._saved_transposed is transposed
        plain = nn.functional.conv2d(inputs, weight, None, 1, kernel // 2)
        torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12)
        for mine, theirs in zip(torch.autograd.grad(ours, (inputs, weight), grad),
                                torch.autograd.grad(plain, (inputs, weight), grad)):
            torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # inference keeps the plain convolution: no weight gradient to save on
        assert basis_conv(x.contiguous(memory_format=CL), weight).grad_fn is None
    layer = _layer()  # a decomposed layer's [unique || shared] basis takes that path too
    assert layer.basis(torch.randn(2, 8, 6, 6, dtype=torch.float64).contiguous(memory_format=CL)
                       ).grad_fn._saved_transposed


def test_resnet_blocks_hand_their_batchnorm_to_the_fused_operator(monkeypatch):
    """The model-level equality test above covers the numbers; this one that the block path is taken."""
    calls = []
    original = fused.norm_coefficients
    monkeypatch.setattr(fused, "norm_coefficients",
                        lambda y, bn, coefficients, output_bn=None, **epilogue: calls.append(
                            (output_bn, epilogue)) or original(y, bn, coefficients, output_bn, **epilogue))
    model = prepare_model(create("ResNet20-S4U1", "cifar10"), torch.device("cpu"))
    model(prepare_images(torch.randn(2, 3, 32, 32), torch.device("cpu")))
    assert len(calls) == 12 and all(isinstance(norm, nn.BatchNorm2d) for norm, _ in calls)
    # conv1 of each block: ReLU only; conv2: the shortcut sum, then ReLU
    assert [(e["residual"] is not None, e["relu"]) for _, e in calls] == [(False, True), (True, True)] * 6


def _pair(name, dataset):
    """Our model as the engine runs it and the reference computation of the same weights, in float64.

    float64 because some gradients are zero in exact arithmetic (a basis BN's shift is cancelled by the
    BN that follows the coefficients), and float32 rounding noise of two orders of computation differs.
    """
    torch.manual_seed(0)
    model = create(name, dataset).double()
    _randomise_norms(model)
    reference = reference_model(model)
    return prepare_model(model, torch.device("cpu")), reference


@pytest.mark.parametrize("name,dataset", [
    ("ResNet20-S4U1", "cifar10"), ("ResNet20-S4U1*", "cifar10"), ("ResNet20-U1", "cifar10"),
    ("ResNet20-S4", "cifar10"), ("ResNet18-S2U1", "cifar100"), ("ResNet20-Shared", "cifar10"),
])
def test_fused_model_equals_reference_outputs_and_gradients(name, dataset):
    ours, reference = _pair(name, dataset)
    layers = [m for m in ours.modules() if isinstance(m, DecomposedConv)]
    assert layers and sum(isinstance(m, ReferenceDecomposedConv) for m in reference.modules()) == len(layers)
    images = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    labels = torch.arange(6) % 10
    losses = []
    for model, regulariser, batch in [(ours, Orthogonality(ours), prepare_images(images, torch.device("cpu"))),
                                      (reference, ReferenceOrthogonality(reference), images)]:
        loss = nn.functional.cross_entropy(model(batch), labels)
        if model.shared_bases.groups:
            loss = loss + 10 * regulariser()
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=1e-10)
    for (key, mine), (_, theirs) in zip(ours.named_parameters(), reference.named_parameters()):
        assert mine.grad is not None and theirs.grad is not None, key
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-7, atol=1e-10, msg=lambda m: f"{key}: {m}")
    for (key, mine), (_, theirs) in zip(ours.named_buffers(), reference.named_buffers()):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("name,dataset,mode", [
    ("ResNet20-S4U1", "cifar10", "cifar10"), ("ResNet20-S4U1*", "cifar10", "cifar10"),
    ("ResNet20-S4U1", "cifar10", "shared"), ("ResNet20-Shared", "cifar10", "cifar10"),
])
def test_batched_regulariser_equals_the_reference_loop(name, dataset, mode):
    _, reference = _pair(name, dataset)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert Orthogonality(reference, mode)().item() == pytest.approx(
        ReferenceOrthogonality(reference, mode)().item(), rel=1e-5)


@pytest.mark.parametrize("name,dataset", [
    ("ResNet56-S16U1*", "cifar10"), ("ResNet20-S4U1", "cifar10"), ("ResNet18-S16U1", "cifar100"),
    ("ResNet20-U1", "cifar10"), ("ResNeXt50-S64U4", "cifar100"), ("MobileNetV2-Shared", "cifar100"),
])
def test_folded_model_equals_the_unfolded_one(name, dataset):
    torch.manual_seed(0)
    model = create(name, dataset)
    _randomise_norms(model)
    with torch.no_grad():  # running statistics of real forward passes keep a deep net's outputs O(1)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32))
    model.eval()
    folded = fold(model)
    assert not folded.training
    assert any(isinstance(m, DecomposedConv) for m in model.modules())  # the original is left as it was
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(images), model(images), rtol=1e-4, atol=1e-4)
        # channels_last: layers left factorised take the fused CPU path
        channels_last = prepare_model(folded, torch.device("cpu"))(images.contiguous(memory_format=CL))
        torch.testing.assert_close(channels_last, model(images), rtol=1e-4, atol=1e-4)


def test_folding_merges_where_it_saves_macs_and_keeps_the_rest():
    model = create("ResNet56-S16U1*", "cifar10")
    decomposed = [m for m in model.modules() if isinstance(m, DecomposedConv)]
    assert decomposed and all(folding_saves(m) for m in decomposed)  # rank 17 > 16 * 9 / 10
    folded = fold(model)
    assert not any(isinstance(m, DecomposedConv) for m in folded.modules())
    assert len(folded.shared_bases) == 0
    folded_macs, unfolded_macs = count_macs(folded, 32)[1], count_macs(model, 32)[1]
    assert folded_macs < unfolded_macs
    assert folded_macs == count_macs(create("ResNet56", "cifar10"), 32)[1]  # exactly ResNet56's convs

    low_rank = create("ResNet20-U1", "cifar10")  # rank 1: one merged 3x3 conv would cost more
    assert not any(folding_saves(m) for m in low_rank.modules() if isinstance(m, DecomposedConv))
    assert sum(isinstance(m, DecomposedConv) for m in fold(low_rank).modules()) == 12
    resnext = fold(create("ResNeXt50-S64U4", "cifar100"))  # ReLU inside: not a linear chain
    assert any(isinstance(m, DecomposedConv) for m in resnext.modules()) and len(resnext.shared_bases)
