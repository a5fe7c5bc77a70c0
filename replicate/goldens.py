"""Goldens the code writes and the tests read: the committed complexity cache of every model the suite trains.

``python -m replicate.goldens`` re-measures every network the shipped tables train (under every profile)
and every published configuration, and rewrites ``replicate/data/complexity.csv``. A test measures them
afresh and compares, so the cache cannot drift from the networks; planning reads it to stay fast.
"""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from . import published, spec
from .complexity import CACHE, cache_text
from .config import PROFILES
from .errors import Parser, cli
from .zoo import ModelSpec
from .atomic import atomic_write_bytes


def trained_models() -> list[ModelSpec]:
    """Every network the shipped tables train under any profile, and every published configuration."""
    specs = {ModelSpec(e.model, e.dataset) for e in published.load()}
    for name in spec.available():
        for row in spec.load(name).rows:
            specs |= {p.model(row.model) for p in PROFILES.values() if p.applies(row.dataset)}
    return sorted(specs, key=lambda s: (s.name, s.dataset, s.sharing_depth or 0, s.unshared_bn))


def write_cache(progress: bool = True) -> Path:
    """Measure every cached model afresh and rewrite the committed cache file."""
    path = Path(str(resources.files("replicate").joinpath(CACHE)))
    atomic_write_bytes(path, cache_text(trained_models(), progress).encode())
    return path


@cli
def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m replicate.goldens", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    print(f"wrote {write_cache(progress=not args.no_progress)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
