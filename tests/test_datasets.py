"""The data layer (docs/paper.md: Training recipes): splits, transforms, missing-data messages and reproducible epoch loaders."""
import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from replicate import datasets as D
from replicate.seeding import Stream, derive
from replicate.datasets import DataError, build_splits, epoch_loader, read_idx

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


def write_idx(path, array):
    """A real IDX file: magic (0, 0, type 0x08 = ubyte, ndim), big-endian uint32 dims, then the bytes."""
    array = np.asarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    (gzip.open if str(path).endswith(".gz") else open)(path, "wb").write(payload)


def fake_fashion(folder, n_train=40, n_test=20, gz=("train-images-idx3-ubyte",)):
    """Images whose pixels are all 255 except pixel (0, 0) = 0; labels 0..9 in turn. Some files gzipped."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.full((n, 28, 28), 255, np.uint8)
        images[:, 0, 0] = 0
        for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)):
            write_idx(folder / (stem + (".gz" if stem in gz else "")), array)
    return folder


@pytest.fixture
def no_system_data(tmp_path, monkeypatch):
    """Hide Debian's Fashion-MNIST and the user's data root, so only what a test writes is found."""
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.setenv("REPLICATE_DATA", str(tmp_path / "no-default-root"))


def labels_of(view):
    return np.asarray([view.targets[i] for i in range(len(view))])


# ------------------------------------------------------------------------------------------ synthetic
@pytest.mark.parametrize("dataset, classes, size", [
    ("cifar10", 10, 32), ("cifar100", 100, 32), ("fashion-mnist", 10, 32), ("imagenet", 1000, 64)])
def test_synthetic_splits_have_the_real_shape_and_class_count(dataset, classes, size):
    s = build_splits(dataset, synthetic=True, synthetic_sizes=(64, 32))
    assert (s.num_classes, s.image_size, s.select) == (classes, size, None)
    assert (len(s.train), len(s.test)) == (64, 32)
    for view in (s.train, s.test):
        x, y = view[0]
        assert x.shape == (3, size, size) and x.dtype == torch.float32 and 0 <= y < classes


def test_synthetic_is_seeded_and_learnable():
    a, b = (build_splits("cifar10", synthetic=True, seed=3) for _ in range(2))
    assert torch.equal(a.test[5][0], b.test[5][0])
    assert not torch.equal(a.test[5][0], build_splits("cifar10", synthetic=True, seed=4).test[5][0])
    # Nearest class mean (train) classifies the test set far above chance (10 %).
    train_x, train_y = a.train.source.images.float(), torch.from_numpy(a.train.source.labels)
    means = torch.stack([train_x[train_y == c].mean(0) for c in range(10)]).flatten(1)
    test_x, test_y = a.test.source.images.float().flatten(1), torch.from_numpy(a.test.source.labels)
    accuracy = (torch.cdist(test_x, means).argmin(1) == test_y).float().mean().item()
    assert accuracy > 0.5


# ---------------------------------------------------------------------------------- splits and subsets
def test_validation_split_is_disjoint_sized_stratified_and_uses_eval_transforms():
    s = build_splits("cifar10", synthetic=True, synthetic_sizes=(200, 50), validation=40, seed=1)
    held, kept = set(s.select.indices.tolist()), set(s.train.indices.tolist())
    assert (len(held), len(kept)) == (40, 160) and not held & kept and held | kept == set(range(200))
    assert np.bincount(s.select.targets, minlength=10).tolist() == [4] * 10
    assert s.select.transform is s.test.transform is not s.train.transform
    first = s.select[0][0]
    assert torch.equal(first, s.select[0][0])   # no augmentation: the same tensor on every access
    again = build_splits("cifar10", synthetic=True, synthetic_sizes=(200, 50), validation=40, seed=1)
    assert again.select.indices.tolist() == s.select.indices.tolist()


def test_synthetic_validation_is_capped_at_half_the_training_set():
    s = build_splits("cifar10", synthetic=True, synthetic_sizes=(100, 20), validation=1000)
    assert (len(s.select), len(s.train)) == (50, 50)


def test_train_subset_is_stratified_seeded_and_leaves_the_validation_split_alone():
    full = build_splits("cifar10", synthetic=True, synthetic_sizes=(200, 20), validation=20, seed=0)
    sub = build_splits("cifar10", synthetic=True, synthetic_sizes=(200, 20), validation=20, seed=0, train_subset=50)
    assert sub.select.indices.tolist() == full.select.indices.tolist()
    assert len(sub.train) == 50 and set(sub.train.indices) <= set(full.train.indices)
    assert np.bincount(sub.train.targets, minlength=10).tolist() == [5] * 10
    odd = build_splits("cifar10", synthetic=True, synthetic_sizes=(200, 20), train_subset=23).train
    counts = np.bincount(odd.targets, minlength=10)
    assert len(odd) == 23 and counts.max() - counts.min() <= 1
    other = build_splits("cifar10", synthetic=True, synthetic_sizes=(200, 20), validation=20, seed=1, train_subset=50)
    assert other.train.indices.tolist() != sub.train.indices.tolist()


def test_stratified_pick_follows_unbalanced_class_sizes():
    targets = np.array([0] * 60 + [1] * 30 + [2] * 10)
    picked, rest = D._stratified_pick(targets, 20, np.random.default_rng(0))
    assert np.bincount(targets[picked]).tolist() == [12, 6, 2]
    assert sorted(picked.tolist() + rest.tolist()) == list(range(100))


def test_too_large_subset_or_validation_on_real_data_is_a_data_error(tmp_path, no_system_data):
    fake_fashion(tmp_path / "fm")
    with pytest.raises(DataError, match="train-subset"):
        build_splits("fashion-mnist", root=tmp_path / "fm", validation=10, train_subset=31)
    with pytest.raises(DataError, match="validation"):
        build_splits("fashion-mnist", root=tmp_path / "fm", validation=40)


# ------------------------------------------------------------------------------------------- loaders
def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


@pytest.fixture(scope="module")
def small_train():
    return build_splits("cifar10", synthetic=True, synthetic_sizes=(48, 16)).train


def test_epoch_loader_is_reproducible_including_augmentation(small_train):
    torch.manual_seed(1)
    first = batches(epoch_loader(small_train, batch_size=16, train=True, seed=7, epoch=3))
    torch.manual_seed(2)   # the training loop's own RNG use must not matter
    loader = epoch_loader(small_train, batch_size=16, train=True, seed=7, epoch=3)
    assert same(first, batches(loader)) and same(first, batches(loader))   # also on re-iteration
    state = torch.get_rng_state()
    batches(loader)
    assert torch.equal(state, torch.get_rng_state())   # and the loader leaves the global RNG alone


def test_a_different_epoch_changes_order_and_augmentation(small_train):
    e0 = epoch_loader(small_train, batch_size=48, train=True, seed=7, epoch=0)
    e1 = epoch_loader(small_train, batch_size=48, train=True, seed=7, epoch=1)
    order0, order1 = ([i for batch in e.batch_sampler for i in batch] for e in (e0, e1))
    assert sorted(order0) == sorted(order1) == list(range(48)) and order0 != order1
    (x0, _), = batches(e0)
    (x1, _), = batches(e1)
    by_index0 = x0[torch.tensor(order0).argsort()]
    by_index1 = x1[torch.tensor(order1).argsort()]
    assert not torch.equal(by_index0, by_index1)   # same images, different crops/flips


def test_eval_loader_is_sequential_and_deterministic(small_train):
    loader = epoch_loader(small_train, batch_size=10, train=False, seed=0, epoch=0, drop_last=True)
    ys = torch.cat([y for _, y in loader])
    assert len(loader) == 4 and ys.tolist() == small_train.targets[:40].tolist()


def test_worker_processes_give_the_same_batches(small_train):
    kwargs = dict(batch_size=12, train=True, seed=5, epoch=2)
    assert same(batches(epoch_loader(small_train, **kwargs)), batches(epoch_loader(small_train, workers=2, **kwargs)))


# ------------------------------------------------------------------------------------------ CIFAR / ImageNet
class FakeCIFAR(torch.utils.data.Dataset):
    """Stands in for torchvision's CIFAR classes: constant RGB (255, 0, 128) images."""
    classes = 10

    def __init__(self, root, train=True, download=False, transform=None):
        self.targets = [i % self.classes for i in range(2 * self.classes if train else self.classes)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return Image.new("RGB", (32, 32), (255, 0, 128)), self.targets[i]


class FakeCIFAR100(FakeCIFAR):
    classes = 100


@pytest.mark.parametrize("dataset, folder, mean, std", [
    ("cifar10", "cifar-10-batches-py", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),   # ImageNet stats (docs/paper.md: Training recipes)
    ("cifar100", "cifar-100-python", (0.507, 0.487, 0.441), (0.267, 0.256, 0.276))])
def test_cifar_normalisation_follows_the_reference(tmp_path, monkeypatch, dataset, folder, mean, std):
    monkeypatch.setattr(D.tv_datasets, "CIFAR10", FakeCIFAR)
    monkeypatch.setattr(D.tv_datasets, "CIFAR100", FakeCIFAR100)
    (tmp_path / folder).mkdir()
    s = build_splits(dataset, root=tmp_path, validation=10)
    x, _ = s.test[0]
    expected = [(v - m) / sd for v, m, sd in zip((1.0, 0.0, 128 / 255), mean, std)]
    assert torch.allclose(x[:, 16, 16], torch.tensor(expected), atol=1e-5)
    assert torch.equal(s.select[0][0], x)   # the held-out split has no augmentation either
    assert s.train[0][0].shape == (3, 32, 32) and s.image_size == 32


def test_missing_cifar_is_a_one_line_error_that_says_how_to_fix_it(tmp_path):
    with pytest.raises(DataError) as info:
        build_splits("cifar10", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "--download" in message and "--data-root" in message
    assert str(tmp_path) in message and "cifar-10-batches-py" in message


def test_missing_imagenet_names_both_folders(tmp_path):
    with pytest.raises(DataError) as info:
        build_splits("imagenet", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "train") in message and str(tmp_path / "val") in message
    assert "cannot be downloaded" in message


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(DataError, match="cifar10, cifar100, imagenet, fashion-mnist"):
        build_splits("mnist")


# ------------------------------------------------------------------------------------------ Fashion-MNIST
def test_fashion_mnist_from_idx_files_is_padded_three_channel_and_normalised(tmp_path, no_system_data):
    s = build_splits("fashion-mnist", root=fake_fashion(tmp_path / "fm"))
    assert (len(s.train), len(s.test), s.num_classes, s.image_size) == (40, 20, 10, 32)
    x, y = s.test[3]
    assert x.shape == (3, 32, 32) and y == 3
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    low, high = -FASHION_MEAN / FASHION_STD, (1 - FASHION_MEAN) / FASHION_STD
    assert torch.allclose(x[0, 0, :], torch.full((32,), low), atol=1e-5)    # the 2-pixel zero border
    assert abs(x[0, 2, 2].item() - low) < 1e-5 and abs(x[0, 15, 15].item() - high) < 1e-5
    bright = (x[0] > 0).sum().item()
    assert bright == 28 * 28 - 1
    crops = torch.stack([s.train[i][0] for i in range(len(s.train))])
    assert crops.shape == (40, 3, 32, 32)
    assert all(26 * 26 - 1 <= (c[0] > 0).sum().item() <= 28 * 28 for c in crops)   # shifted <= 4 px, never lost


def test_fashion_mnist_in_torchvision_layout_is_found(tmp_path, no_system_data):
    fake_fashion(tmp_path / "FashionMNIST" / "raw", gz=())
    assert len(build_splits("fashion-mnist", root=tmp_path).train) == 40


def test_missing_fashion_mnist_names_both_ways_to_get_it(tmp_path, no_system_data):
    with pytest.raises(DataError) as info:
        build_splits("fashion-mnist", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "apt-get install dataset-fashion-mnist" in message
    assert "--download" in message and str(tmp_path) in message


def test_read_idx_rejects_broken_files(tmp_path):
    write_idx(tmp_path / "ok", np.arange(6).reshape(2, 3))
    assert read_idx(tmp_path / "ok").tolist() == [[0, 1, 2], [3, 4, 5]]
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-1])
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    for name in ("short", "bad"):
        with pytest.raises(DataError, match=name):
            read_idx(tmp_path / name)


@pytest.mark.skipif(not (D.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_from_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATE_DATA", str(tmp_path))
    s = build_splits("fashion-mnist")
    assert (len(s.train), len(s.test)) == (60000, 10000)
    assert np.bincount(s.train.targets).tolist() == [6000] * 10
    assert s.train[0][0].shape == (3, 32, 32)


# ------------------------------------------------------------------------------ device pipeline (issue 31)
class RandomCIFAR(torch.utils.data.Dataset):
    """torchvision's CIFAR layout: ``data`` N x 32 x 32 x 3 uint8 (random pixels), PIL images per item."""

    def __init__(self, root, train=True, download=False, transform=None):
        n = 60 if train else 20
        rng = np.random.default_rng(1 if train else 2)
        self.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.targets = [i % 10 for i in range(n)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return Image.fromarray(self.data[i]), self.targets[i]


@pytest.fixture
def random_cifar(tmp_path, monkeypatch):
    monkeypatch.setattr(D.tv_datasets, "CIFAR10", RandomCIFAR)
    monkeypatch.setattr(D.tv_datasets, "CIFAR100", RandomCIFAR)
    for folder in ("cifar-10-batches-py", "cifar-100-python"):
        (tmp_path / folder).mkdir()
    return tmp_path


def device_splits(dataset, root):
    if dataset == "fashion-mnist":
        return build_splits(dataset, root=root / "fm", validation=8)
    if dataset.startswith("synthetic-"):
        return build_splits(dataset.split("-", 1)[1], synthetic=True, synthetic_sizes=(40, 12), validation=8)
    return build_splits(dataset, root=root, validation=8)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "fashion-mnist", "synthetic-cifar10",
                                     "synthetic-imagenet"])
def test_device_pipeline_gives_the_per_sample_pipelines_batches_pixel_for_pixel(dataset, random_cifar,
                                                                                 no_system_data):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)   # random Fashion-MNIST pixels
    (random_cifar / "fm").mkdir()
    for prefix, array in (("train-images", images), ("t10k-images", images[:20])):
        write_idx(random_cifar / "fm" / f"{prefix}-idx3-ubyte", array)
    for prefix, n in (("train-labels", 50), ("t10k-labels", 20)):
        write_idx(random_cifar / "fm" / f"{prefix}-idx1-ubyte", np.arange(n) % 10)
    splits = device_splits(dataset, random_cifar)
    for seed, epoch in ((0, 1), (7, 3), (123456789, 40)):
        kwargs = dict(batch_size=16, train=True, seed=seed, epoch=epoch)
        expected = batches(epoch_loader(splits.train, **kwargs))
        got = batches(D.device_loader(splits.train, **kwargs))
        assert same(expected, got)
        assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in got)
    for view in (splits.select, splits.test):   # eval transforms: no augmentation, in order
        kwargs = dict(batch_size=7, train=False, seed=0, epoch=0)
        assert same(batches(epoch_loader(view, **kwargs)), batches(D.device_loader(view, **kwargs)))


def test_device_draws_are_torchs_generator_outputs():
    seeds = D.sample_seeds(5, 2, 300)
    rows, cols, flips = D.augmentation_draws(5, 2, 300, padding=4)
    for i in (0, 1, 17, 299):
        assert int(seeds[i]) == derive(5, Stream.SAMPLE, 2, i)
        g = torch.Generator().manual_seed(int(seeds[i]))
        assert torch.randint(0, 9, (1,), generator=g).item() == rows[i]
        assert torch.randint(0, 9, (1,), generator=g).item() == cols[i]
        assert bool(torch.rand(1, generator=g) < 0.5) == flips[i]


def test_device_loader_follows_a_shard_and_drops_the_last_batch(small_train):
    kwargs = dict(batch_size=10, train=True, seed=3, epoch=2, drop_last=True, shard=D.Shard(1, 2))
    expected = batches(epoch_loader(small_train, **kwargs))
    loader = D.device_loader(small_train, **kwargs)
    assert len(loader) == len(expected) == 4 and same(expected, batches(loader))
    assert [len(y) for _, y in expected] == [5] * 4


def test_device_loader_refuses_file_datasets_in_one_line(small_train):
    view = D.LabelledView(small_train.source, small_train.source.labels, [0, 1], small_train.transform)
    assert D.resolve_loader("auto", view) == "workers" and D.resolve_loader("auto", small_train) == "device"
    with pytest.raises(DataError, match="--loader workers"):
        D.device_loader(view, batch_size=2, train=True, seed=0, epoch=0)
