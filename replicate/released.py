"""The authors' released checkpoints (Net_RL2 at f98cd9d, and the published version's at 936a886): read them
into our networks, write ours as theirs.

This module owns the translation between the two state-dict layouts, so that the published numbers can be
re-measured with our models and our models can be evaluated by the authors' scripts. The layouts differ in
names only (the networks compute the same function), in three ways:

* the authors register a shared basis once at model level (``shared_basis_2``) and again in every block
  that uses it (``layer2.3.shared_basis``): alias keys of one tensor. We register it once (``shared_bases``);
  reading checks that all aliases agree, writing emits every alias (one tensor, stored once);
* module names differ (``conv1``/``bn1``/``layerN.M``/``fc`` against ``stem``/``stages``/``head``...); a
  basis is [unique ‖ shared] in both, so no weight is permuted;
* the ImageNet scripts wrap the network in ``DataParallel``: keys start with ``module.``.

One walker per family visits our modules in the authors' registration order and names each after the
authors; a module's own state-dict keys complete the names, and tensor identity gives our key. The result
(a :class:`Layout`) serves reading, writing and identifying a file from its keys and shapes alone.
Only the released variants have a known layout (SingleShared/DoubleShared ResNets, the shared DenseNet121 and
ResNeXt50, MobileNetV2-Shared; from the published version ResNet50/101-Shared and -Shared++ and
MobileNetV2-Shared++, with or without channel attention); anything else is refused rather than guessed.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .errors import UserError
from .catalog import DATASETS
from .models import create
from .models.blocks import DecomposedConv
from .models.bottleneck import BottleneckResNet
from .models.densenet import DenseLayer, DenseNet, Transition
from .models.mobilenet import STAGES, MobileNetV2
from .models.resnet import ResNet
from .atomic import atomic_write_bytes

__all__ = ["Checkpoint", "CheckpointError", "Layout", "authors_layout", "identify", "load", "read", "save"]

PREFIX = "module."  # DataParallel, in every ImageNet file of the authors
_CLASSIFIERS = ("fc.weight", "linear.weight", "conv2.weight", "classifier.1.weight")
_RESNET_DEPTHS = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34}  # 64-wide ResNets by blocks per stage
_CLASSES = {info.classes: key for key, info in DATASETS.items() if info.zoo}


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit the model: one line naming the file and the problem."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds: the weights (``module.`` removed) and what the training script stored.

    ``acc`` is the best test top-1 accuracy in percent the authors' script saved with the weights (a
    placeholder in randomised test files); ``model``/``dataset`` are filled in once :func:`load` knows them.
    The copy :func:`load` attaches to a model (``model.checkpoint``) has no weights: they are in the model.
    """

    path: str
    state_dict: dict[str, torch.Tensor]
    acc: float | None = None
    epoch: int | None = None
    has_optimizer: bool = False
    data_parallel: bool = False
    model: str | None = None
    dataset: str | None = None

    @property
    def stored_top1_err(self) -> float | None:
        return None if self.acc is None else round(100.0 - self.acc, 4)


@dataclass(frozen=True)
class Layout:
    """Our model's state dict in the authors' names: ``(their key, our key)`` in their order, aliases included."""

    name: str
    dataset: str
    keys: tuple[tuple[str, str], ...]

    @property
    def prefix(self) -> str:
        return PREFIX if self.dataset == "imagenet" else ""

    def aliases(self) -> dict[str, list[str]]:
        """Our key -> their keys, for tensors they store under more than one key (the shared bases)."""
        theirs: dict[str, list[str]] = {}
        for their_key, our_key in self.keys:
            theirs.setdefault(our_key, []).append(their_key)
        return {ours: keys for ours, keys in theirs.items() if len(keys) > 1}


# ------------------------------------------------------------------------------------------ the walkers
Walk = Iterator[tuple[str, "nn.Module | None"]]


def _resnet(model: ResNet) -> Walk:
    yield "conv1", model.stem[0]
    yield "bn1", model.stem[1]
    for s, stage in enumerate(model.stages, 1):
        yield from _bank_entries(model, stage)
        for b, block in enumerate(stage):
            yield from _prefixed(f"layer{s}.{b}", _bottleneck(block) if model.bottleneck else _basic(block))
    yield "linear" if model.bottleneck else "fc", model.head[-1]


def _basic(block: nn.Module) -> Walk:
    convs = ((1, block.conv1, block.bn1), (2, block.conv2, block.bn2))
    if not isinstance(block.conv1, DecomposedConv):
        for i, conv, bn in convs:
            yield from ((f"conv{i}", conv), (f"bn{i}", bn))
        yield "shortcut", block.shortcut
        return
    bases = list(dict.fromkeys(conv.shared for _, conv, _ in convs))
    for k, basis in enumerate(bases, 1):
        yield "shared_basis" + (f"_{k}" if len(bases) > 1 else ""), basis
    for i, conv, bn in convs:
        yield from ((f"basis_conv{i}", conv.unique), (f"basis_bn{i}", conv.basis_bn),
                    (f"coeff_conv{i}", conv.coefficients), (f"bn{i}", bn))


def _bottleneck(block: nn.Module) -> Walk:
    middle = block.middle
    if not isinstance(middle, DecomposedConv):  # ResNeXt's first blocks: one Sequential in the reference
        parts = (block.conv1, block.bn1, None, middle[0], middle[1], None, block.conv3, block.bn3)
        yield from ((f"residual_function.{i}", part) for i, part in enumerate(parts))
        yield "shortcut", block.shortcut
        return
    yield from (("shared_basis", middle.shared), ("conv1", block.conv1), ("bn1", block.bn1),
                ("basis_conv2", middle.unique), ("bn2", middle.basis_bn), ("conv3", block.conv3),
                ("bn3", block.bn3))


def _bottleneck_resnet(model: BottleneckResNet) -> Walk:
    """ResNet50/101(-Shared, -Shared++): the shared convs are named in blocks ``shared_basis`` (one per
    stage) or ``shared_basis_1``/``_2`` (two), in place of ``conv2``/``conv3``."""
    yield "conv1", model.stem[0]
    yield "bn1", model.stem[1]
    for s, stage in enumerate(model.stages, 1):
        yield from _bank_entries(model, stage)
        for b, block in enumerate(stage):
            middle, last = block.middle[0], block.conv3
            double = isinstance(last, DecomposedConv)
            second = ("shared_basis_1", middle.shared) if double else \
                ("shared_basis", middle.shared) if isinstance(middle, DecomposedConv) else ("conv2", middle)
            third = ("shared_basis_2", last.shared) if double else ("conv3", last)
            yield from _prefixed(f"layer{s}.{b}", (("conv1", block.conv1), ("bn1", block.bn1), second,
                                                   ("bn2", block.middle[1]), third, ("bn3", block.bn3),
                                                   ("shortcut", block.shortcut)))
    yield "fc", model.head[-1]


def _densenet(model: DenseNet) -> Walk:
    yield "conv1", model.stem[0]
    dense, layer = 0, 0
    for module in model.features:
        if isinstance(module, DenseLayer):
            conv = module.conv2
            yield from _prefixed(f"features.dense_block_layer_{dense}.bottle_neck_layer_{layer}", (
                ("shared_basis", conv.shared), ("bn0", module.bn1), ("conv1", module.conv1),
                ("bn1", module.bn2), ("basis_conv2", conv.unique), ("basis_bn2", conv.basis_bn),
                ("coeff_conv2", conv.coefficients)))
            layer += 1
        elif isinstance(module, Transition):
            yield f"features.transition_layer_{dense}.down_sample", module
            dense, layer = dense + 1, 0
        else:
            yield "features.bn", module  # the final BatchNorm (the ReLU after it has no state)
    yield from _bank_entries(model)  # all four: the fourth is registered, never used (block 4 uses basis 3)
    yield "linear", model.head[-1]


def _mobilenet(model: MobileNetV2) -> Walk:
    yield "pre", model.stem
    blocks = iter(model.blocks)
    for s, (_, _, repeats, _, _) in enumerate(STAGES, 1):
        stage = [next(blocks) for _ in range(repeats)]
        yield from _bank_entries(model, stage)
        for r, block in enumerate(stage):
            shared = isinstance(block.expand, DecomposedConv)
            if isinstance(block.project, DecomposedConv):  # Shared++: both 1x1 convs shared, then attention
                yield from _prefixed(f"stage{s}.{r}", (
                    ("shared_basis1", block.expand.shared), ("shared_basis2", block.project.shared),
                    ("bn1", block.bn1), ("conv2", block.depthwise), ("bn2", block.bn2), ("bn3", block.bn3),
                    ("chan_attention", block.attention), ("shortcut", block.shortcut)))
                continue
            yield from _prefixed(f"stage{s}" + (f".{r}" if repeats > 1 else ""), (
                ("shared_basis1", block.expand.shared) if shared else ("conv1", block.expand),
                ("bn1", block.bn1), ("conv2", block.depthwise), ("bn2", block.bn2),
                ("conv3", block.project), ("bn3", block.bn3), ("shortcut", block.shortcut)))
    yield "conv1", model.last
    yield ("classifier.1", model.head[-1]) if model.dataset == "imagenet" else ("conv2", model.head[1])


def _bank_entries(model: nn.Module, used_by: Any = None) -> Walk:
    """Model-level entries of the bases that ``used_by`` use (all: None): ``shared_bases.stage2_1`` is
    ``shared_basis_2_1``."""
    used = None if used_by is None else {id(m.shared) for part in used_by for m in part.modules()
                                         if isinstance(m, DecomposedConv) and m.shared is not None}
    for key, basis in model.shared_bases.items():
        if used is None or id(basis) in used:
            yield re.sub(r"^[a-z]+", "shared_basis_", key), basis


def _prefixed(prefix: str, entries: Any) -> Walk:
    yield from ((f"{prefix}.{name}", module) for name, module in entries)


def _released(model: nn.Module) -> bool:
    """Is ``model`` one of the variants the authors released checkpoints of (the layouts we know)?"""
    config = model.config
    whole = config.variant in ("naive2", "naive2-2020") or config.variant == "naive" and (
        isinstance(model, (MobileNetV2, BottleneckResNet)))
    return config.spec.is_default and (config.variant in ("single", "double") or whole)


def authors_layout(model: nn.Module) -> Layout:
    """The authors' layout of ``model`` (a zoo model); :class:`CheckpointError` for a variant they never released."""
    name, dataset = model.config.name, model.config.dataset
    walker = {ResNet: _resnet, DenseNet: _densenet, MobileNetV2: _mobilenet,
              BottleneckResNet: _bottleneck_resnet}.get(type(model))
    if walker is None or not _released(model):
        raise CheckpointError(f"the authors' checkpoint layout is known only for the variants they released "
                              f"(SsUu, SsUu* ResNets, DenseNet121-SsUu, ResNeXt50-SsUu, MobileNetV2-Shared, "
                              f"-Shared++, ImageNet ResNet50/101-Shared, -Shared++), not {name} "
                              f"(save it with layout='ours')")
    ours = {id(tensor): key for key, tensor in model.state_dict(keep_vars=True).items()}
    keys = tuple((f"{path}.{local}", ours[id(tensor)]) for path, module in walker(model) if module is not None
                 for local, tensor in module.state_dict(keep_vars=True).items())
    missed = set(ours.values()) - {our_key for _, our_key in keys}
    assert not missed and len({k for k, _ in keys}) == len(keys), f"{name}: layout walk incomplete: {missed}"
    return Layout(name, dataset, keys)


# ----------------------------------------------------------------------------------------------- reading
def read(path: str | os.PathLike) -> Checkpoint:
    """The weights and stored figures of a checkpoint: the authors' ``{'net_state_dict': ..., 'acc': ...,
    'epoch': ...}`` (ours too), or a bare state dict. Loaded with ``weights_only=True``: no code runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused:
            raise CheckpointError(f"{path}: holds a Python object ({refused[1]}) that a safe load "
                                  f"(weights_only=True) refuses; not a checkpoint in the authors' format") from None
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint (unreadable pickle)") from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({_first_line(error)})") from None
    state = data.get("net_state_dict", data.get("state_dict")) if isinstance(data, dict) else None
    if state is None and isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        state, data = data, {}
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = ", ".join(map(repr, list(data)[:5])) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: no state dict of tensors in the file (expected 'net_state_dict'; "
                              f"found {found})")
    data_parallel = all(key.startswith(PREFIX) for key in state)
    if data_parallel:
        state = {key[len(PREFIX):]: value for key, value in state.items()}
    return Checkpoint(str(path), dict(state), acc=_number(data.get("acc"), float),
                      epoch=_number(data.get("epoch"), int),
                      has_optimizer=data.get("optimizer_state_dict") is not None, data_parallel=data_parallel,
                      model=_text(data.get("model")), dataset=_text(data.get("dataset")))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any, kind: type) -> Any:
    try:
        return None if value is None else kind(value)
    except (TypeError, ValueError, RuntimeError):
        return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def _mismatch(expected: Layout, model: nn.Module, found: dict[str, tuple[int, ...]]) -> str | None:
    """The first key that is missing, left over or of another shape; None when the file fits the layout."""
    ours = _shapes(model.state_dict())
    for their_key, our_key in expected.keys:
        if their_key not in found:
            return f"missing key {their_key!r}"
        if found[their_key] != ours[our_key]:
            return f"key {their_key!r} has shape {list(found[their_key])}, {expected.name} has {list(ours[our_key])}"
    known = {their_key for their_key, _ in expected.keys}
    extra = next((key for key in found if key not in known), None)
    return f"unexpected key {extra!r}" if extra else None


def _candidates(state: dict[str, torch.Tensor]) -> list[tuple[str, str]]:
    """Zoo names (and datasets) a file in the authors' layout can be, from a few keys and shapes."""
    dataset = _dataset_from(state)
    if dataset is None:
        return []
    rows = {key: value.shape[0] for key, value in state.items() if value.dim()}
    s = rows.get("shared_basis_1.weight") or rows.get("shared_basis_1_1.weight", 0)
    if "pre.0.weight" in state:  # MobileNetV2: one shared 1x1 conv per stage, or two (with attention or not)
        if "shared_basis_1_2.weight" in state:
            return [("MobileNetV2-Shared++", dataset), ("MobileNetV2-SharedDouble", dataset)]
        return [("MobileNetV2-Shared", dataset)]
    if "features.dense_block_layer_0.bottle_neck_layer_0.bn0.weight" in state:
        u = rows.get("features.dense_block_layer_0.bottle_neck_layer_0.basis_conv2.weight", 0)
        return [(f"DenseNet121-S{s}U{u}", dataset)]
    if "layer1.0.residual_function.0.weight" in state:
        return [(f"ResNeXt50-S{s}U{rows.get('layer1.1.basis_conv2.weight', 0)}", dataset)]
    blocks = [len({key.split(".")[1] for key in state if key.startswith(f"layer{i}.")}) for i in range(1, 5)]
    blocks = tuple(count for count in blocks if count)
    if "layer1.0.conv3.weight" in state:  # a bottleneck ResNet with whole shared convolutions
        depth = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101}.get(blocks)
        plus = "++" if "shared_basis_1_2.weight" in state else ""
        return [(f"ResNet{depth}-Shared{plus}", dataset)] if depth else []
    depth = 6 * blocks[0] + 2 if len(blocks) == 3 else _RESNET_DEPTHS.get(blocks)
    double = "*" if "shared_basis_1_1.weight" in state else ""
    return [(f"ResNet{depth}-S{s}U{rows.get('layer1.1.basis_conv1.weight', 0)}{double}", dataset)] if depth else []


def _blank(name: str, dataset: str) -> nn.Module:
    """The zoo model with uninitialised weights (built on the meta device, then given memory): a checkpoint is
    about to set every tensor, and initialising them first (orthogonal bases) would take most of the time."""
    with torch.device("meta"):
        model = create(name, dataset)
    if {key for key, _ in model.named_buffers()} - set(model.state_dict()):  # a buffer no file would set
        return create(name, dataset)
    return model.to_empty(device="cpu")


def _fit(state: dict[str, torch.Tensor]) -> tuple[nn.Module, Layout] | None:
    """The zoo model whose authors' layout the state dict has exactly (built, not initialised), or None."""
    found = _shapes(state)
    for name, dataset in _candidates(state):
        try:
            model = _blank(name, dataset)
            expected = authors_layout(model)
        except UserError:
            continue
        if _mismatch(expected, model, found) is None:
            return model, expected
    return None


def identify(state_dict: dict[str, torch.Tensor]) -> tuple[str, str]:
    """The zoo name and dataset of a state dict in the authors' layout, from its keys and shapes alone."""
    state = {key.removeprefix(PREFIX): value for key, value in state_dict.items()}
    fit = _fit(state)
    if fit is None:
        raise CheckpointError("the state dict fits no released model in the authors' layout")
    return fit[1].name, fit[1].dataset


def load(path: str | os.PathLike, name: str | None = None, dataset: str | None = None) -> nn.Module:
    """Our network with the weights of a checkpoint, in eval mode; ``model.checkpoint`` says what it stored.

    ``name=None`` identifies the model and dataset from the file's keys and shapes (a file saved with
    ``layout="ours"`` names them); ``dataset=None`` takes the file's. A file in the authors' layout has each
    shared basis under several keys; they must hold the same values. Raises
    :class:`CheckpointError` (one line, naming the file) when the file cannot be read or does not fit.
    """
    ckpt = read(path)
    state, name = ckpt.state_dict, name or ckpt.model
    if name is None:
        fit = _fit(state)
        if fit is None:
            raise CheckpointError(f"{ckpt.path}: its keys and shapes fit no released model (first keys: "
                                  f"{', '.join(list(state)[:3])}); give the model name")
        model, expected = fit
        if dataset not in (None, expected.dataset):
            raise CheckpointError(f"{ckpt.path}: a checkpoint of {expected.name} for {expected.dataset}, "
                                  f"not for {dataset}")
    else:
        dataset = dataset or ckpt.dataset or _dataset_from(state)
        if dataset is None:
            raise CheckpointError(f"{ckpt.path}: cannot tell the dataset from the file; give the dataset")
        try:
            model = _blank(name, dataset)
        except UserError as error:
            raise CheckpointError(f"{ckpt.path}: {error}") from None
        ours = model.state_dict()
        if set(state) == set(ours) and _shapes(state) == _shapes(ours):  # saved with layout="ours"
            return _finish(model, state, ckpt)
        try:
            expected = authors_layout(model)
            problem = _mismatch(expected, model, _shapes(state))
        except CheckpointError:
            problem = "the authors released no checkpoint of it (no known layout)"
        if problem:
            fit = _fit(state)
            hint = f"; it fits {fit[1].name} ({fit[1].dataset})" if fit else "; it fits no released model"
            raise CheckpointError(f"{ckpt.path}: not a checkpoint of {model.config.name} ({dataset}): "
                                  f"{problem}{hint}")
    for our_key, their_keys in expected.aliases().items():
        first = state[their_keys[0]]
        differs = next((key for key in their_keys[1:] if not torch.equal(state[key], first)), None)
        if differs:
            raise CheckpointError(f"{ckpt.path}: shared basis alias {differs!r} differs from {their_keys[0]!r} "
                                  f"(one tensor in the authors' model): the file is damaged or was edited")
    ours = {}
    for their_key, our_key in expected.keys:
        ours.setdefault(our_key, state[their_key])
    return _finish(model, ours, ckpt)


def _dataset_from(state: dict[str, torch.Tensor]) -> str | None:
    """The dataset a state dict in the authors' layout is for, by its classifier's number of classes."""
    classifier = next((key for key in _CLASSIFIERS if key in state), None)
    return _CLASSES.get(state[classifier].shape[0]) if classifier else None


def _finish(model: nn.Module, state: dict[str, torch.Tensor], ckpt: Checkpoint) -> nn.Module:
    model.load_state_dict(state, strict=True)
    model.checkpoint = replace(ckpt, state_dict={}, model=model.config.name, dataset=model.config.dataset)
    return model.eval()


# ----------------------------------------------------------------------------------------------- writing
def save(model: nn.Module, path: str | os.PathLike, layout: str = "authors", acc: float | None = None,
         epoch: int | None = None) -> None:
    """Write ``model`` atomically as ``{'net_state_dict': ..., 'acc': ..., 'epoch': ...}``.

    ``layout="authors"``: their keys in their order, every alias of a shared basis (one tensor, stored once),
    ``module.`` for ImageNet, so that their scripts evaluate the file. ``layout="ours"``: our state dict, with
    the model's name and dataset, which :func:`load` reads back without a name.
    """
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    if layout == "authors":
        expected = authors_layout(model)
        payload: dict[str, Any] = {"net_state_dict": {expected.prefix + their: state[our]
                                                      for their, our in expected.keys}}
    elif layout == "ours":
        payload = {"net_state_dict": state, "model": model.config.name, "dataset": model.config.dataset}
    else:
        raise CheckpointError(f"unknown checkpoint layout {layout!r}: 'authors' or 'ours'")
    payload.update(acc=acc, epoch=epoch)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())
