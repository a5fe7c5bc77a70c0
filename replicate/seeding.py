"""Every random stream of a run, derived from the run's seed by one function: :func:`derive` (issue 27).

A run has one user seed. Each use of randomness is a named :class:`Stream` with its own keys (an epoch, a
sample index...), and :func:`derive` turns (seed, stream, keys) into the integer that seeds that stream's
generator. Nothing else in the package computes a seed, so two streams can never silently share one, and a
DDP process reading sample ``i`` of epoch ``e`` gets the seed a single process gets.

Bit-for-bit compatibility with the committed results decides the values, not elegance. Six streams were
already derived by one mixer (:func:`mix`, splitmix64 chained over the parts) and keep its values exactly;
per-epoch streams mixed the epoch *before* the stream tag, and still do. Two streams predate the mixer and
keep their old formulas, because the initial weights and every epoch's global RNG of the committed runs
depend on them: ``INIT`` is the seed itself and ``EPOCH`` is ``seed * 100_003 + epoch``. Mixing them too
would be more uniform and would change every committed run's numbers under an unchanged run id; so they are
named here, with their formulas, and derived nowhere else.

Torch-free (numpy only): it sits at the bottom of the import layers, below the data and training code.
"""
from __future__ import annotations

from enum import IntEnum

import numpy as np

__all__ = ["Stream", "derive", "derive_each", "mix"]

MASK64 = (1 << 64) - 1


class Stream(IntEnum):
    """A use of randomness; the value is the tag mixed into its seed (never reuse or renumber one)."""

    VALIDATION = 1  # which training images the clean protocol holds out
    SUBSET = 2      # which training images a reduced profile keeps
    SHUFFLE = 3     # the data order of an epoch
    SAMPLE = 4      # the augmentation (crop, flip) of one sample in one epoch
    WORKER = 5      # the DataLoader's own generator (its workers' base seeds)
    SYNTH = 6       # synthetic images: prototypes (no key) and each split's draws (key: split)
    INIT = 7        # the global torch RNG when the network is built: its initial weights
    EPOCH = 8       # the global torch RNG at the start of each epoch (dropout draws from it)


# The keys each stream takes, in order. Streams listed in _EPOCH_FIRST mix their first key (the epoch)
# before the tag, as they always have.
KEYS: dict[Stream, tuple[str, ...]] = {
    Stream.VALIDATION: (), Stream.SUBSET: (), Stream.SHUFFLE: ("epoch",), Stream.SAMPLE: ("epoch", "index"),
    Stream.WORKER: ("epoch",), Stream.SYNTH: (), Stream.INIT: (), Stream.EPOCH: ("epoch",),
}
_EPOCH_FIRST = frozenset({Stream.SHUFFLE, Stream.SAMPLE, Stream.WORKER})
_SYNTH_SPLIT = ("split",)  # SYNTH also takes one key: 0 for the training images, 1 for the test images


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def _chain(parts: tuple[int, ...]) -> int:
    h = 0
    for p in parts:
        h = _splitmix64(h ^ (int(p) & MASK64))
    return h


def mix(*parts: int) -> int:
    """A 63-bit seed from integers: distinct tuples give unrelated seeds (unlike ``seed + epoch``)."""
    return _chain(parts) >> 1


def _check(stream: Stream, keys: tuple[int, ...]) -> None:
    names = KEYS[stream]
    if len(keys) != len(names) and not (stream is Stream.SYNTH and len(keys) == len(_SYNTH_SPLIT)):
        raise TypeError(f"stream {stream.name} takes keys ({', '.join(names)}), got {len(keys)}: {keys}")


def _mixed_parts(seed: int, stream: Stream, keys: tuple[int, ...]) -> tuple[int, ...]:
    if stream in _EPOCH_FIRST:
        return (seed, keys[0], int(stream), *keys[1:])
    return (seed, int(stream), *keys)


def derive(seed: int, stream: Stream, *keys: int) -> int:
    """The seed of ``stream`` for a run seeded ``seed``, at ``keys`` (see :data:`KEYS`): the one derivation."""
    _check(stream, keys)
    if stream is Stream.INIT:
        return seed
    if stream is Stream.EPOCH:
        return seed * 100_003 + keys[0]
    return mix(*_mixed_parts(seed, stream, keys))


def _splitmix64_np(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def derive_each(seed: int, stream: Stream, *keys: int, last: int) -> np.ndarray:
    """``derive(seed, stream, *keys, k)`` for every k < ``last``, as uint64, at once (numpy): e.g. the
    augmentation seed of every sample of an epoch, for the device pipeline."""
    if stream in (Stream.INIT, Stream.EPOCH):
        raise TypeError(f"stream {stream.name} has no vectorised form")
    _check(stream, (*keys, 0))
    prefix = _chain(_mixed_parts(seed, stream, (*keys, 0))[:-1])
    with np.errstate(over="ignore"):
        return _splitmix64_np(np.uint64(prefix) ^ np.arange(last, dtype=np.uint64)) >> np.uint64(1)
