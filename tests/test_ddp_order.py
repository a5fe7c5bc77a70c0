"""Issue 27: a DDP run reads the single-process run's batches, each split across the ranks, and evaluates
every sample exactly once. Ranks are computed one after the other in this process (no process group)."""
import pytest
import torch

from replicate import datasets as D
from replicate import train
from replicate.datasets import DataError, Shard, build_splits

LOADERS = {"workers": D.epoch_loader, "device": D.device_loader}


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.fixture(scope="module")
def splits():
    # 54 training images in batches of 16: 16, 16, 16 and a last batch of 6 (parts of 3/3, or 1/2/1/2)
    return build_splits("cifar10", synthetic=True, synthetic_sizes=(54, 17))


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("world", [2, 4])
def test_the_ranks_parts_of_each_batch_are_the_single_process_batch(splits, loader, world):
    make = LOADERS[loader]
    kwargs = dict(batch_size=16, train=True, seed=5, epoch=3)
    single = batches(make(splits.train, **kwargs))
    ranks = [batches(make(splits.train, shard=Shard(r, world), **kwargs)) for r in range(world)]
    assert len(single) == 4 and all(len(parts) == len(single) for parts in ranks)
    for b, (images, labels) in enumerate(single):
        assert torch.equal(torch.cat([parts[b][0] for parts in ranks]), images)   # same pixels: same crops/flips
        assert torch.equal(torch.cat([parts[b][1] for parts in ranks]), labels)
    assert [len(parts[0][1]) for parts in ranks] == [16 // world] * world   # a full batch: equal parts


def test_a_part_is_consecutive_and_never_empty_where_the_batch_has_a_sample_per_rank():
    assert [Shard(r, 4).part(list(range(6))) for r in range(4)] == [[0], [1, 2], [3], [4, 5]]
    assert [Shard(r, 2).part(list(range(16))) for r in range(2)] == [list(range(8)), list(range(8, 16))]


@pytest.mark.parametrize("loader", LOADERS)
def test_a_batch_the_world_does_not_divide_or_a_last_batch_smaller_than_the_world_is_refused(splits, loader):
    with pytest.raises(DataError, match="batch size 18 .* 4 processes"):
        LOADERS[loader](splits.train, batch_size=18, train=True, seed=0, epoch=1, shard=Shard(0, 4))
    with pytest.raises(DataError, match="last batch of 2 images .* 4 processes"):   # 54 images: 52, then 2
        LOADERS[loader](splits.train, batch_size=52, train=True, seed=0, epoch=1, shard=Shard(0, 4))


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("world", [2, 3, 4])
def test_evaluation_reads_every_sample_once_on_some_rank(splits, loader, world):
    """17 test images over 2-4 processes: no rank pads its share with another's samples (counted twice)."""
    got = []
    for rank in range(world):
        env = train.Environment(torch.device("cpu"), rank=rank, world_size=world, loader=loader)
        got += [y for _, y in train._eval_batches(splits.test, env, batch_size=5)]
    single = train._eval_batches(splits.test, train.Environment(torch.device("cpu"), loader=loader), batch_size=5)
    assert sorted(torch.cat(got).tolist()) == sorted(torch.cat([y for _, y in single]).tolist())
    assert len(torch.cat(got)) == len(splits.test) == 17


@pytest.mark.parametrize("world", [2, 4])
def test_the_trainer_of_each_rank_reads_its_part_of_the_single_process_batches(splits, world, tmp_path):
    from conftest import TINY_SPEC
    from replicate import plan, spec

    (tmp_path / "tiny.yaml").write_text(TINY_SPEC)
    (run,) = plan.expand(spec.load(str(tmp_path / "tiny.yaml")), tmp_path, "smoke", seeds=1, rows="plain")

    def labels(rank, world_size):
        trainer = train.Trainer(run.config, run.folder, env=train.Environment(torch.device("cpu"), rank, world_size))
        trainer.splits = build_splits("cifar10", synthetic=True, synthetic_sizes=run.config.synthetic_sizes)
        return [y for _, y in trainer._epoch_batches(2)], trainer._steps_per_epoch()

    single, steps = labels(0, 1)
    ranks = [labels(r, world) for r in range(world)]
    assert all(s == steps == len(single) for _, s in ranks)
    for b, expected in enumerate(single):
        assert torch.equal(torch.cat([parts[b] for parts, _ in ranks]), expected)


def test_unequal_parts_are_weighted_so_the_ranks_average_is_the_batch_mean(splits):
    class Recipe:
        batch_size = 16

    class Config:
        recipe = Recipe()

    losses = torch.arange(54, dtype=torch.float64) ** 1.5   # per-sample losses of one epoch in order
    for world in (2, 4):
        for batch in range(4):
            whole = losses[16 * batch:16 * (batch + 1)]
            averaged = 0.0
            for rank in range(world):
                trainer = train.Trainer.__new__(train.Trainer)
                trainer.config, trainer.splits = Config(), splits
                trainer.env = train.Environment(torch.device("cpu"), rank, world)
                part = torch.as_tensor(Shard(rank, world).part(whole))
                averaged += trainer._part_weight(batch, len(part)) * part.mean() / world   # what DDP averages
            assert averaged.item() == pytest.approx(whole.mean().item(), rel=1e-12)


# -- two real processes (gloo, CPU) ------------------------------------------------------------------------
def _rank_main(rank, world, config, folder, port, out):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    trainer = train.Trainer(config, folder, progress=False, log=lambda _: None,
                            env=train.Environment(torch.device("cpu"), rank, world))
    seen, batches_of = [], trainer._epoch_batches
    trainer._epoch_batches = lambda epoch: [seen.append((epoch, y.tolist())) or (x, y) for x, y in batches_of(epoch)]
    trainer.run()
    test = trainer.splits.test
    shared = train.accuracy(trainer.network, test, trainer.env, 7, "fp32")   # parts of 14, 7: 7+7, 3+4
    alone = train.accuracy(trainer.model, test, train.Environment(torch.device("cpu")), 7, "fp32")
    counted = torch.tensor(sum(len(y) for _, y in train._eval_batches(test, trainer.env, 7)))
    torch.distributed.all_reduce(counted)
    torch.save({"labels": seen, "shared": shared, "alone": alone, "counted": counted.item()}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_a_two_process_gloo_run_trains_on_the_single_process_batches(tmp_path):
    """A real DDP smoke run (2 processes, gloo): each rank reads its part of the single-process batches, the
    uneven last batch (5 images: 2 + 3) does not stall the ranks, the run finishes, and evaluation counts each
    test image once (21 images: DistributedSampler would have padded to 22)."""
    import dataclasses
    import socket

    from conftest import TINY_SPEC
    from replicate import plan, spec

    (tmp_path / "tiny.yaml").write_text(TINY_SPEC)
    (run,) = plan.expand(spec.load(str(tmp_path / "tiny.yaml")), tmp_path / "results", "smoke", seeds=1, rows="plain")
    config = dataclasses.replace(run.config, synthetic_sizes=(197, 21))   # 3 batches of 64, then 5
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_rank_main, args=(2, config, run.folder, port, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    splits = build_splits("cifar10", synthetic=True, synthetic_sizes=(197, 21))
    for epoch in (1, 2):
        single = [y.tolist() for _, y in D.device_loader(splits.train, batch_size=64, train=True, seed=0, epoch=epoch)]
        parts = [[labels for e, labels in rank["labels"] if e == epoch] for rank in ranks]
        assert [a + b for a, b in zip(*parts)] == single and [len(p) for p in parts[0]] == [32, 32, 32, 2]
    for rank in ranks:   # every test image evaluated once, on one rank or the other, and the counts summed
        assert rank["counted"] == 21 and rank["shared"]["top1"] == ranks[0]["alone"]["top1"]
