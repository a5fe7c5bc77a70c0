"""The data layer: CIFAR-10/100, ImageNet and Fashion-MNIST splits with the reference's transforms (docs/paper.md: Training recipes),
a synthetic stand-in for file-less runs, and epoch loaders whose order *and* augmentation are reproducible.

Every split is a :class:`LabelledView`: indices into one untransformed source plus a transform, so the
training split and the held-out ``select`` split share the same source but not the same transform.

Reproducibility (:func:`epoch_loader`): the shuffle comes from a generator seeded by ``(seed, epoch)`` and
every sample is transformed under a global torch RNG seeded by ``(seed, epoch, index)``, then restored.
The augmentation of sample ``i`` in epoch ``e`` therefore depends on nothing else: not on the worker count,
the batch size, the iteration order, or what the training loop drew from the global RNG before.
"""
from __future__ import annotations

import gzip
import math
import os
import random
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import datasets as tv_datasets
from torchvision import transforms as T

from .catalog import DATASETS, info
from .config import SYNTHETIC_SIZES
from .errors import UserError
from .seeding import MASK64, Stream, derive, derive_each

__all__ = [
    "DATASETS", "DataError", "Splits", "LabelledView", "build_splits", "epoch_loader", "default_root",
    "read_idx", "DEBIAN_FASHION_MNIST", "BatchForm", "DeviceLoader", "device_loader",
    "transform_batch", "LOADERS", "Shard",
]

# The datasets' facts (classes, sizes, normalisation, which loader) are the catalog's (catalog.py); what is
# here is how each loader finds and reads its files.
# Where Debian's `dataset-fashion-mnist` package puts the four gzipped IDX files (a module constant so that
# tests can point it elsewhere).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR = {  # name -> (torchvision class name, folder torchvision expects under root)
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
}


class DataError(UserError):
    """User-facing problem with data (missing files...). Message: ONE line naming where we looked and how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))  # one line, even when wrapping foreign errors


@dataclass(frozen=True)
class Splits:
    train: Dataset                # with training augmentation
    select: Dataset | None        # held-out validation split (eval transforms) or None
    test: Dataset                 # test set (CIFAR) / val set (ImageNet), eval transforms
    num_classes: int
    image_size: int               # input side length the model sees (32, 224; 64 for synthetic ImageNet)


# --------------------------------------------------------------------------------------------- seeding
def _torch_generator(seed: int, stream: Stream, *keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive(seed, stream, *keys))


# ------------------------------------------------------------------------------------------ datasets
class LabelledView(Dataset):
    """``transform(source[indices[i]][0]), label``: train and select share a source, not a transform.

    ``batches``: the same split and transform in the device pipeline's terms (:class:`BatchForm`), for the
    in-memory datasets; None where images are files (ImageNet)."""

    def __init__(self, source: Any, targets: np.ndarray, indices: Sequence[int] | np.ndarray,
                 transform: Callable, batches: "BatchForm | None" = None) -> None:
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = np.asarray(targets)[self.indices]   # labels without touching the images
        self.transform = transform
        self.batches = batches

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.source[int(self.indices[i])]
        return self.transform(image), int(label)


class _TensorSource(Dataset):
    """Whole dataset as one uint8 tensor N x C x H x W in memory (Fashion-MNIST, synthetic): fast on CPU."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray) -> None:
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


@dataclass(frozen=True)
class _Source:
    """Untransformed train/test data of one dataset plus its transforms."""
    train: Any
    train_targets: np.ndarray
    test: Any
    test_targets: np.ndarray
    train_transform: Callable
    eval_transform: Callable
    num_classes: int
    image_size: int
    train_form: "BatchForm | None" = None  # the train and eval transforms on the train split's pixels
    eval_form: "BatchForm | None" = None
    test_form: "BatchForm | None" = None   # the eval transform on the test split's pixels


# ---------------------------------------------------------------------------------------- transforms
class _ToFloat:
    """uint8 tensor -> float in [0, 1]: what ToTensor does for PIL images."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255)


class FashionToCifar:
    """THE one place where Fashion-MNIST meets the CIFAR models: 1x28x28 -> zero-pad 2 -> 3x32x32 (uint8)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (2, 2, 2, 2)).expand(3, -1, -1).contiguous()


def _pil_transforms(dataset: str) -> tuple[Callable, Callable]:
    """The reference's torchvision pipelines on PIL images (docs/paper.md: Training recipes)."""
    facts = info(dataset)
    norm = T.Normalize(facts.mean, facts.std)
    if facts.loader == "imagenet":
        train = T.Compose([T.RandomResizedCrop(facts.image_size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        return train, T.Compose([T.Resize(256), T.CenterCrop(facts.image_size), T.ToTensor(), norm])
    train = T.Compose([T.RandomCrop(facts.image_size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    return train, T.Compose([T.ToTensor(), norm])


def _tensor_transforms(dataset: str, size: int, pre: Sequence[Callable] = ()) -> tuple[Callable, Callable]:
    """CIFAR-style crop (padding size/8) + flip on uint8 tensors; used for Fashion-MNIST and synthetic data."""
    norm = T.Normalize(info(dataset).mean, info(dataset).std)
    train = T.Compose([*pre, T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip(), _ToFloat(), norm])
    return train, T.Compose([*pre, _ToFloat(), norm])


# ------------------------------------------------------------------------------------------- sources
def default_root() -> Path:
    """``$REPLICATE_DATA`` or ``~/.cache/replicate/data``."""
    return Path(os.environ.get("REPLICATE_DATA") or "~/.cache/replicate/data").expanduser()


def _cifar_source(dataset: str, root: Path, download: bool) -> _Source:
    (cls_name, folder), pretty = _CIFAR[dataset], info(dataset).display
    if not download and not (root / folder).is_dir():
        raise DataError(f"{pretty} not found under {root} (looked for {folder}); "
                        f"pass --download to fetch it or --data-root DIR where it lies")
    cls = getattr(tv_datasets, cls_name)
    try:
        train, test = cls(str(root), train=True, download=download), cls(str(root), train=False)
    except RuntimeError as exc:   # torchvision: "Dataset not found or corrupted"
        raise DataError(f"{pretty} under {root / folder} is incomplete or corrupted ({exc}); "
                        f"delete it and pass --download, or --data-root DIR with a good copy") from exc
    except OSError as exc:        # download failed (no network...)
        raise DataError(f"downloading {pretty} into {root} failed ({type(exc).__name__}: {exc}); "
                        f"put {folder} there by hand or pass --data-root DIR where it lies") from exc
    train_tf, eval_tf = _pil_transforms(dataset)
    return _Source(train, np.asarray(train.targets), test, np.asarray(test.targets), train_tf, eval_tf,
                   info(dataset).classes, info(dataset).image_size,
                   *_forms(dataset, _hwc_pixels(train), _hwc_pixels(test), padding=4))


class _ArrayImages(Dataset):
    """torchvision's CIFAR layout in memory: ``data`` N x H x W x 3 uint8, a PIL image per item."""

    def __init__(self, data: np.ndarray, targets: np.ndarray) -> None:
        self.data, self.targets = data, list(map(int, targets))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        return Image.fromarray(self.data[i]), self.targets[i]


def in_memory_splits(dataset: str, train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                     test_labels: np.ndarray, *, validation: int = 0, seed: int = 0) -> Splits:
    """CIFAR-layout arrays (N x 32 x 32 x 3 uint8) as splits with CIFAR's transforms, per-sample (PIL, as
    torchvision's CIFAR datasets) and per batch: data for the loader benchmark and the tests."""
    train, test = _ArrayImages(train_images, train_labels), _ArrayImages(test_images, test_labels)
    train_tf, eval_tf = _pil_transforms(dataset)
    src = _Source(train, np.asarray(train_labels), test, np.asarray(test_labels), train_tf, eval_tf,
                  info(dataset).classes, train_images.shape[1],
                  *_forms(dataset, _hwc_pixels(train), _hwc_pixels(test), padding=4))
    return _assemble(src, validation=validation, seed=seed, train_subset=None, cap=False)


def _imagenet_dirs(root: Path) -> tuple[Path, Path] | None:
    for base in (root, root / "imagenet"):
        if (base / "train").is_dir() and (base / "val").is_dir():
            return base / "train", base / "val"
    return None


def _imagenet_source(root: Path, check_only: bool = False) -> _Source | None:
    dirs = _imagenet_dirs(root)
    if dirs is None:
        raise DataError(f"ImageNet not found: expected ImageFolder trees {root / 'train'} and {root / 'val'} "
                        f"(or {root / 'imagenet'}/train and /val), one sub-folder per class; it cannot be "
                        f"downloaded automatically: get ILSVRC-2012 yourself and pass --data-root DIR")
    if check_only:  # listing 1.3 M files takes minutes: the runs do it, a pre-flight check need not
        return None
    try:
        train, val = tv_datasets.ImageFolder(str(dirs[0])), tv_datasets.ImageFolder(str(dirs[1]))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"ImageNet under {dirs[0].parent} is not in ImageFolder layout ({exc}); "
                        f"train/ and val/ need one sub-folder per class") from exc
    if train.classes != val.classes:
        raise DataError(f"ImageNet class folders differ between {dirs[0]} ({len(train.classes)}) and "
                        f"{dirs[1]} ({len(val.classes)}); sort val/ into the same class folders as train/")
    train_tf, eval_tf = _pil_transforms("imagenet")
    return _Source(train, np.asarray(train.targets), val, np.asarray(val.targets), train_tf, eval_tf,
                   len(train.classes), info("imagenet").image_size)


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (MNIST format, gzipped or not) with numpy alone: no torchvision needed."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path} ({exc}); re-install or re-download it") from exc
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic); re-install or re-download it")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    offset, count = 4 + 4 * ndim, math.prod(dims)
    if len(raw) != offset + count * dtype.itemsize:
        raise DataError(f"{path} is truncated or padded ({len(raw)} bytes for shape {dims}); "
                        f"re-install or re-download it")
    return np.frombuffer(raw, dtype, count, offset).reshape(dims).astype(dtype.newbyteorder("="))


def _find_fashion_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (plain or .gz), or None unless all four are there."""
    found = {}
    for key, stem in FASHION_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            return None
        found[key] = hit
    return found


def _fashion_folders(root: Path | None) -> list[Path]:
    """Search order: the given root, Debian's package, torchvision's layout under the (default) root."""
    effective = root if root is not None else default_root()
    return [*([root] if root is not None else []), DEBIAN_FASHION_MNIST, effective / "FashionMNIST" / "raw"]


@lru_cache(maxsize=4)
def _load_fashion(files: tuple[tuple[str, Path], ...]) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    """Parsed and checked once per process (the real training set takes ~1 s to gunzip)."""
    arrays = {key: read_idx(path) for key, path in files}
    out = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        where = dict(files)[f"{split}_images"].parent
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (len(images),) \
                or labels.size == 0 or labels.min() < 0 or labels.max() > 9:
            raise DataError(f"Fashion-MNIST {split} files in {where} are inconsistent (images {images.shape}, "
                            f"labels {labels.shape}); re-install or re-download them")
        out += [torch.from_numpy(images.astype(np.uint8)).unsqueeze(1), labels.astype(np.int64)]
    return tuple(out)  # type: ignore[return-value]


def _download_fashion(root: Path) -> None:
    try:
        tv_datasets.FashionMNIST(str(root), train=True, download=True)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"downloading Fashion-MNIST into {root / 'FashionMNIST' / 'raw'} failed "
                        f"({type(exc).__name__}: {exc}); try `apt-get install dataset-fashion-mnist` "
                        f"or --data-root DIR with the IDX files") from exc


def _fashion_source(root: Path | None, download: bool) -> _Source:
    folders = _fashion_folders(root)
    files = next((f for f in map(_find_fashion_files, folders) if f is not None), None)
    if files is None and download:
        _download_fashion(folders[-1].parent.parent)
        files = _find_fashion_files(folders[-1])
    if files is None:
        raise DataError(f"Fashion-MNIST not found (looked for {FASHION_FILES['train_images']}[.gz] and the "
                        f"3 other IDX files in {', '.join(map(str, folders))}); `apt-get install "
                        f"dataset-fashion-mnist`, or pass --download (torchvision) or --data-root DIR")
    train_x, train_y, test_x, test_y = _load_fashion(tuple(sorted(files.items())))
    facts = info("fashion-mnist")
    train_tf, eval_tf = _tensor_transforms(facts.key, facts.image_size, pre=[FashionToCifar()])
    return _Source(_TensorSource(train_x, train_y), train_y, _TensorSource(test_x, test_y), test_y,
                   train_tf, eval_tf, facts.classes, facts.image_size,
                   *_forms("fashion-mnist", _Pixels.of_nchw(train_x), _Pixels.of_nchw(test_x), padding=4, border=2))


def _synthetic_source(dataset: str, seed: int, sizes: tuple[int, int]) -> _Source:
    """Class prototypes (smooth, mirror-symmetric, with a class colour) plus pixel noise: learnable in a few
    epochs despite crop/flip augmentation, and generated from ``seed`` alone."""
    classes, size = info(dataset).classes, info(dataset).synthetic_size
    g = _torch_generator(seed, Stream.SYNTH)
    coarse = F.interpolate(torch.randn(classes, 3, 4, 4, generator=g), size=(size, size), mode="bilinear")
    prototypes = (coarse + coarse.flip(-1)) / 2 + 0.5 * torch.randn(classes, 3, 1, 1, generator=g)

    def draw(n: int, stream: int) -> _TensorSource:
        gs = _torch_generator(seed, Stream.SYNTH, stream)
        labels = (torch.arange(n) % classes)[torch.randperm(n, generator=gs)]
        x = prototypes[labels] + 0.5 * torch.randn(n, 3, size, size, generator=gs)
        return _TensorSource((128 + 50 * x).round().clamp(0, 255).to(torch.uint8), labels.numpy())

    train, test = draw(sizes[0], 0), draw(sizes[1], 1)
    train_tf, eval_tf = _tensor_transforms(dataset, size)
    return _Source(train, train.labels, test, test.labels, train_tf, eval_tf, classes, size,
                   *_forms(dataset, _Pixels.of_nchw(train.images), _Pixels.of_nchw(test.images), padding=size // 8))


# ------------------------------------------------------------------------------------------- splitting
def _stratified_pick(targets: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``n`` items drawn per class in proportion to class size (largest remainder), and the rest."""
    classes, first, counts = np.unique(targets, return_index=True, return_counts=True)
    quota = counts * (n / len(targets))
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(take - quota, kind="stable")[: n - take.sum()]] += 1   # biggest remainders first
    by_class = np.argsort(targets, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    picked = np.concatenate([rng.permutation(by_class[s:s + c])[:k] for s, c, k in zip(starts, counts, take)])
    picked.sort()
    rest = np.setdiff1d(np.arange(len(targets)), picked, assume_unique=True)
    return picked, rest


def _assemble(src: _Source, *, validation: int, seed: int, train_subset: int | None, cap: bool) -> Splits:
    """Held-out split first (so it does not depend on ``train_subset``), then the training subset."""
    pool = np.arange(len(src.train_targets))
    if cap:   # synthetic: the training split keeps at least half
        validation = min(validation, len(pool) // 2)
    if validation >= len(pool):
        raise DataError(f"--validation {validation} leaves no training images (the training set has {len(pool)})")
    select = None
    if validation > 0:
        held, kept = _stratified_pick(src.train_targets, validation, np.random.default_rng(derive(seed, Stream.VALIDATION)))
        select = LabelledView(src.train, src.train_targets, held, src.eval_transform, src.eval_form)
        pool = kept
    if train_subset is not None:
        if cap:
            train_subset = min(train_subset, len(pool))
        if not 0 < train_subset <= len(pool):
            raise DataError(f"--train-subset {train_subset} must be between 1 and the {len(pool)} training "
                            f"images left after the validation split")
        chosen, _ = _stratified_pick(src.train_targets[pool], train_subset,
                                     np.random.default_rng(derive(seed, Stream.SUBSET)))
        pool = pool[chosen]
    return Splits(
        train=LabelledView(src.train, src.train_targets, pool, src.train_transform, src.train_form),
        select=select,
        test=LabelledView(src.test, src.test_targets, np.arange(len(src.test_targets)), src.eval_transform,
                          src.test_form),
        num_classes=src.num_classes, image_size=src.image_size)


# The catalog's loader kinds (DatasetInfo.loader) -> (dataset, --data-root or None, download) -> its source.
_LOADERS: dict[str, Callable[[str, Path | None, bool], _Source]] = {
    "cifar": lambda dataset, given, download: _cifar_source(dataset, given or default_root(), download),
    "fashion": lambda dataset, given, download: _fashion_source(given, download),
    "imagenet": lambda dataset, given, download: _imagenet_source(given or default_root()),
}


def build_splits(dataset: str, *, root: str | os.PathLike | None = None, download: bool = False,
                 validation: int = 0, seed: int = 0, synthetic: bool = False,
                 train_subset: int | None = None, synthetic_sizes: tuple[int, int] = SYNTHETIC_SIZES) -> Splits:
    """Train/select/test splits of ``dataset`` with the reference's transforms (docs/paper.md: Training recipes).

    ``validation=V`` holds out V training images (stratified, seeded) with eval transforms as ``select``;
    ``train_subset=N`` then keeps a stratified, seeded N of the remaining training images. ``synthetic``
    needs no files (ImageNet then uses 64x64 images); it caps V so that training keeps half, and caps N.
    Raises :class:`DataError` (one line: where we looked, how to fix it) for missing or broken data.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; valid names: {', '.join(DATASETS)}")
    if validation < 0:
        raise DataError(f"--validation must be >= 0, got {validation}")
    given = Path(root).expanduser() if root is not None else None
    if synthetic:
        src = _synthetic_source(dataset, seed, synthetic_sizes)
    else:
        src = _LOADERS[info(dataset).loader](dataset, given, download)
    return _assemble(src, validation=validation, seed=seed, train_subset=train_subset, cap=synthetic)


def check_available(dataset: str, *, root: str | os.PathLike | None = None, download: bool = False) -> None:
    """Fail early, with :class:`DataError`, when a dataset a plan needs cannot be found (or fetched)."""
    if info(dataset).loader == "imagenet":  # its folders are checked, not read: reading takes minutes
        _imagenet_source(Path(root).expanduser() if root is not None else default_root(), check_only=True)
    else:
        build_splits(dataset, root=root, download=download)


# --------------------------------------------------------------------------------------------- loading
class _EpochSeeded(Dataset):
    """Transforms sample ``i`` under a global torch/Python RNG seeded from ``(seed, epoch, i)`` and restores
    the RNG afterwards: torchvision's random transforms draw from the global RNG, and this makes them
    independent of workers, batch size and order, without disturbing the training loop's own RNG."""

    def __init__(self, dataset: Dataset, seed: int, epoch: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        sample_seed = derive(self.seed, Stream.SAMPLE, self.epoch, i)
        torch_state, py_state = torch.get_rng_state(), random.getstate()
        try:
            torch.default_generator.manual_seed(sample_seed)
            random.seed(sample_seed)
            return self.dataset[i]
        finally:
            torch.set_rng_state(torch_state)
            random.setstate(py_state)


class _EpochPermutation(Sampler[int]):
    """A shuffle from a fresh generator seeded by ``(seed, epoch)``: the same order on every iteration."""

    def __init__(self, n: int, seed: int, epoch: int) -> None:
        self.n, self.seed, self.epoch = n, seed, epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=_torch_generator(self.seed, Stream.SHUFFLE, self.epoch)).tolist())


@dataclass(frozen=True)
class Shard:
    """This process's part of every batch when ``world`` processes train one run (DDP, issue 27).

    Of each batch of the single-process order, rank r takes the consecutive samples [r·m/w, (r+1)·m/w)
    (m: the batch's size, w: the world), so the ranks' parts concatenated in rank order are the single-process
    batch: the same samples with the same augmentation (seeded per sample), for any world size that divides
    the batch size. Consecutive rather than strided: a part is a slice, and the ranks' outputs gathered in
    rank order are the batch as one process would have computed it. A last batch that the world does not
    divide gives parts that differ by one sample. What still differs from one process: batch normalisation
    sees a rank's part only (``bn_batch`` in a result's execution), and every rank draws dropout from the
    same per-epoch global RNG."""

    rank: int = 0
    world: int = 1

    def _bounds(self, m: int) -> tuple[int, int]:
        return self.rank * m // self.world, (self.rank + 1) * m // self.world

    def part(self, batch: Sequence[int]) -> Sequence[int]:
        start, stop = self._bounds(len(batch))
        return batch[start:stop]


class _Batches(Sampler[list[int]]):
    """The batches of ``order`` (a sampler, or None for 0..n-1), each cut to ``shard``'s part.

    Training (``strict``) refuses a split that would leave a process without samples in some batch: every
    process must take every step. Evaluation leaves an empty part out (its counts are summed across ranks)."""

    def __init__(self, order: Sampler[int] | None, n: int, batch_size: int, drop_last: bool, shard: Shard,
                 strict: bool) -> None:
        self.order, self.n, self.batch_size, self.drop_last, self.shard = order, n, batch_size, drop_last, shard
        self.last = 0 if drop_last else n % batch_size
        if batch_size % shard.world:
            raise DataError(f"batch size {batch_size} cannot be split evenly over {shard.world} processes: "
                            f"use a world size that divides it")
        if strict and 0 < self.last < shard.world:
            raise DataError(f"the last batch of {self.last} images cannot be split over {shard.world} processes "
                            f"(every process needs one): use fewer processes or another batch size")

    def __len__(self) -> int:
        start, stop = self.shard._bounds(self.last)
        return self.n // self.batch_size + (stop > start)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.order) if self.order is not None else list(range(self.n))
        stop = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        for start in range(0, stop, self.batch_size):
            part = list(self.shard.part(order[start:start + self.batch_size]))
            if part:
                yield part


def _epoch_batches(n: int, *, batch_size: int, train: bool, seed: int, epoch: int, drop_last: bool,
                   shard: Shard) -> _Batches:
    """Training shuffles with a generator seeded from ``(seed, epoch)``; evaluation reads in order."""
    order = _EpochPermutation(n, seed, epoch) if train else None
    return _Batches(order, n, batch_size, drop_last, shard, strict=train)


def _seed_worker(worker_id: int) -> None:
    """numpy and ``random`` in workers follow the worker's torch seed, itself derived from the loader's generator."""
    worker_seed = torch.initial_seed() & MASK64
    np.random.seed(worker_seed % 2**32)
    random.seed(worker_seed)


def epoch_loader(data: Dataset, *, batch_size: int, train: bool, seed: int, epoch: int,
                 workers: int = 0, pin_memory: bool = False, drop_last: bool = False,
                 shard: Shard = Shard()) -> DataLoader:
    """A loader whose order and augmentation depend only on ``(seed, epoch)``; build one per epoch.

    ``train=True`` shuffles with a generator seeded from ``(seed, epoch)`` (no shuffle otherwise); each
    sample is transformed under an RNG seeded from ``(seed, epoch, index)``, so the batches are identical for
    any ``workers`` and on re-iteration, and the caller need not (and cannot usefully) ``torch.manual_seed``
    for the data: the global RNG is left as it was. ``batch_size`` is the whole batch; under DDP ``shard``
    keeps this process's part of each (:class:`Shard`).
    """
    parts = _epoch_batches(len(data), batch_size=batch_size, train=train,  # type: ignore[arg-type]
                           seed=seed, epoch=epoch, drop_last=drop_last, shard=shard)
    return DataLoader(_EpochSeeded(data, seed, epoch), batch_sampler=parts, num_workers=workers,
                      pin_memory=pin_memory, generator=_torch_generator(seed, Stream.WORKER, epoch),
                      worker_init_fn=_seed_worker)


# ------------------------------------------------------------------------------------- device pipeline
# The in-memory datasets (CIFAR-10/100, Fashion-MNIST, synthetic) as one uint8 tensor on the training device,
# augmented a whole batch at a time there (issue 31): no per-sample Python, no worker processes, nothing to
# starve a GPU. The crop offsets and flip of sample i in epoch e are those the per-sample pipeline above draws
# under the global RNG seeded with derive(seed, Stream.SAMPLE, e, i): torch's CPU generator is MT19937 seeded with the
# seed's low 32 bits, and RandomCrop's two randint calls and RandomHorizontalFlip's rand(1) are its first three
# outputs, computed here for every index at once (numpy). The batches are the per-sample pipeline's, pixel for
# pixel (tests), so a run's numbers do not depend on the loader, and the loader is no part of its run id.
LOADERS = ("device", "workers")


class _Pixels:
    """One split's uint8 images as N x H x W x C (channels last, as CIFAR's arrays are), made on first use
    and copied to each device once; ``mirrored``: 2N images, the N mirrored ones after the N (a flipped
    sample's crop is a crop of its mirror image, so no batch is ever flipped)."""

    def __init__(self, make: Callable[[], torch.Tensor]) -> None:
        self._make, self._copies = make, {}

    @classmethod
    def of_nchw(cls, images: torch.Tensor) -> "_Pixels":
        return cls(lambda: images.permute(0, 2, 3, 1).contiguous())

    def on(self, device: torch.device | str, mirrored: bool = False) -> torch.Tensor:
        """N x H x W x C pixels on ``device`` (2N with ``mirrored``; the first N are the plain ones either way)."""
        key = torch.device(device)
        held = self._copies.get(key)
        if held is None or (mirrored and not held[1]):
            host = self._make()
            both = torch.cat([host, host.flip(2)]) if mirrored else host
            held = self._copies[key] = (both.to(key), mirrored)
        return held[0]


def _hwc_pixels(dataset: Any) -> _Pixels | None:
    """torchvision's CIFAR datasets hold their images as one N x 32 x 32 x 3 uint8 array (``data``)."""
    data = getattr(dataset, "data", None)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 4:
        return None
    return _Pixels(lambda: torch.from_numpy(data))


@dataclass(frozen=True)
class BatchForm:
    """A split's transform applied to whole batches of its uint8 pixels: a zero ``border`` (Fashion-MNIST's
    28 -> 32), then, when ``padding`` > 0, RandomCrop(size, padding) and RandomHorizontalFlip, then
    ToTensor's /255, the grey channel repeated to ``channels`` and Normalize(mean, std)."""

    pixels: _Pixels
    mean: tuple[float, ...]
    std: tuple[float, ...]
    padding: int = 0
    border: int = 0
    channels: int = 3

    @property
    def augments(self) -> bool:
        return self.padding > 0


def _forms(dataset: str, train: _Pixels | None, test: _Pixels | None, *, padding: int,
           border: int = 0) -> tuple[BatchForm | None, BatchForm | None, BatchForm | None]:
    """(train, eval-on-train-pixels, test) forms, or Nones where the pixels are not in memory."""
    if train is None or test is None:
        return None, None, None
    mean, std = info(dataset).mean, info(dataset).std
    return (BatchForm(train, mean, std, padding, border), BatchForm(train, mean, std, 0, border),
            BatchForm(test, mean, std, 0, border))


def sample_seeds(seed: int, epoch: int, n: int) -> np.ndarray:
    """The augmentation seeds of samples 0..n-1 in ``epoch`` (what :class:`_EpochSeeded` seeds sample i with)."""
    return derive_each(seed, Stream.SAMPLE, epoch, last=n)


_MT_N, _MT_M = 624, 397


def mt19937_first_outputs(seeds: np.ndarray, count: int = 3) -> list[np.ndarray]:
    """The first ``count`` (< 227) 32-bit outputs of torch's CPU generator after ``manual_seed(s)``, for
    every seed ``s`` at once: the MT19937 state seeded with s's low 32 bits, one twist, tempering."""
    state = np.empty((_MT_M + count + 1, len(seeds)), np.uint32)
    state[0] = (np.asarray(seeds, dtype=np.uint64) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    outputs = []
    with np.errstate(over="ignore"):
        for j in range(1, len(state)):
            previous = state[j - 1]
            state[j] = np.uint32(1812433253) * (previous ^ (previous >> np.uint32(30))) + np.uint32(j)
        for k in range(count):
            u, v = state[k], state[k + 1]
            y = (u & np.uint32(0x80000000)) | (v & np.uint32(0x7FFFFFFF))
            y = state[k + _MT_M] ^ (y >> np.uint32(1)) ^ ((v & np.uint32(1)) * np.uint32(0x9908B0DF))
            y ^= y >> np.uint32(11)
            y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
            y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
            y ^= y >> np.uint32(18)
            outputs.append(y)
    return outputs


def augmentation_draws(seed: int, epoch: int, n: int, padding: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row offset, column offset and flip of samples 0..n-1 in ``epoch``, as the per-sample pipeline draws
    them: ``RandomCrop.get_params`` takes ``randint(0, 2·padding+1)`` twice (``x % range`` of one 32-bit
    output each), ``RandomHorizontalFlip`` flips when ``rand(1) < 0.5`` (24 bits of the third output)."""
    first, second, third = mt19937_first_outputs(sample_seeds(seed, epoch, n))
    span = np.uint32(2 * padding + 1)
    return (first % span).astype(np.int64), (second % span).astype(np.int64), (third & np.uint32(0xFFFFFF)) < (1 << 23)


def transform_batch(pixels: torch.Tensor, form: BatchForm, rows: torch.Tensor | None = None,
                    cols: torch.Tensor | None = None) -> torch.Tensor:
    """A batch of uint8 N x H x W x C pixels through ``form``: float32 N x C x H' x W' in channels_last memory,
    equal to the per-sample transform's output. When ``form`` augments: ``rows``/``cols`` are the crop
    offsets in the padded images, and a flipped sample comes as its mirror image with column offset 2p - j
    (the mirror of the crop at j of the image is the crop at 2p - j of its mirror).

    The crop picks one of the (2p+1)² windows of each padded image (a strided view of all of them, indexed
    once). Normalisation runs on the contiguous N x (H'·W'·C) pixels against per-pixel copies of the channel
    statistics: the arithmetic of ToTensor and Normalize, element for element, without a broadcast over a
    3-wide channel dimension."""
    pad = form.border + form.padding
    if pad:
        pixels = F.pad(pixels, (0, 0, pad, pad, pad, pad))
    n = len(pixels)
    if form.augments:
        size, span = pixels.shape[1] - 2 * form.padding, 2 * form.padding + 1
        sb, sh, sw, sc = pixels.stride()
        windows = pixels.as_strided((n, span, span, size, size, pixels.shape[-1]), (sb, sh, sw, sh, sw, sc))
        pixels = windows[torch.arange(n, device=pixels.device), rows, cols]
    if pixels.shape[-1] != form.channels:
        pixels = pixels.expand(*pixels.shape[:-1], form.channels)
    images = pixels.contiguous().float()
    mean, std = _per_pixel(form.mean, form.std, images.shape[1] * images.shape[2], images.device)
    images.view(n, -1).div_(255).sub_(mean).div_(std)
    return images.permute(0, 3, 1, 2)


@lru_cache(maxsize=16)
def _per_pixel(mean: tuple[float, ...], std: tuple[float, ...], pixels: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The channel statistics repeated for every pixel of an H x W x C image, made once per device (a tensor
    made from Python numbers on a GPU is a synchronous copy)."""
    return tuple(torch.tensor(v, dtype=torch.float32).repeat(pixels).to(device) for v in (mean, std))


class DeviceLoader:
    """The batches :func:`epoch_loader` gives (same order, same augmentation, same pixels), made on ``device``
    from the split's pixels there: images float32 channels_last, labels int64, both on ``device``."""

    def __init__(self, data: LabelledView, *, batch_size: int, train: bool, seed: int, epoch: int,
                 device: torch.device | str = "cpu", drop_last: bool = False, shard: Shard = Shard()) -> None:
        if getattr(data, "batches", None) is None:
            raise DataError("--loader device needs a dataset held in memory (CIFAR-10/100, Fashion-MNIST, "
                            "synthetic); this one is read from files (ImageNet): use --loader workers")
        self.data, self.form, self.device = data, data.batches, torch.device(device)
        self.seed, self.epoch = seed, epoch
        self.batches = _epoch_batches(len(data), batch_size=batch_size, train=train, seed=seed, epoch=epoch,
                                      drop_last=drop_last, shard=shard)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device, form = self.device, self.form
        parts = list(self.batches)   # this process's part of each batch, moved to the device at once
        order = torch.as_tensor([i for part in parts for i in part], dtype=torch.int64).to(device)
        pixels = form.pixels.on(device, mirrored=form.augments)
        sources = torch.from_numpy(self.data.indices).to(device)
        labels = torch.from_numpy(self.data.targets.astype(np.int64)).to(device)
        if form.augments:  # this epoch's draws for every sample; a flipped one reads its mirror image
            rows, cols, flips = (torch.from_numpy(d).to(device) for d in
                                 augmentation_draws(self.seed, self.epoch, len(self.data), form.padding))
            sources = torch.where(flips, sources + len(pixels) // 2, sources)
            cols = torch.where(flips, 2 * form.padding - cols, cols)
        for positions in order.split([len(part) for part in parts]):
            batch = pixels.index_select(0, sources.index_select(0, positions))
            if form.augments:
                images = transform_batch(batch, form, rows.index_select(0, positions),
                                         cols.index_select(0, positions))
            else:
                images = transform_batch(batch, form)
            yield images, labels.index_select(0, positions)


def device_loader(data: Dataset, **kwargs) -> DeviceLoader:
    """:class:`DeviceLoader` with :func:`epoch_loader`'s arguments (``device`` instead of workers/pinning)."""
    return DeviceLoader(data, **kwargs)  # type: ignore[arg-type]


def resolve_loader(choice: str, data: Dataset) -> str:
    """``auto``: the device pipeline for in-memory data, worker processes for files (ImageNet)."""
    if choice not in ("auto", *LOADERS):
        raise DataError(f"unknown loader {choice!r}; valid: auto, {', '.join(LOADERS)}")
    if choice == "auto":
        return "device" if getattr(data, "batches", None) is not None else "workers"
    return choice
