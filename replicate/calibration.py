"""Measured training cost (issue 31): seconds per training image per network, device kind and precision.

``python -m replicate.bench --calibrate`` times training steps fed by the device pipeline and records them;
``python -m replicate.bench --calibrate --from-results DIR`` records what finished runs measured (their
epochs' training time over their images). ``python -m replicate.run TABLE --dry-run`` prices a run with the
figure of its network and precision measured on the device kind it will train on (the cluster config's
``gpu_kind`` with ``--cluster slurm``, else this machine's device), and says so per row; without one it falls
back to the stated FLOP model (``plan.ASSUMED_TFLOPS``).

The file is the user's, not the package's: figures belong to a machine. ``$REPLICATE_CALIBRATION``, else
``~/.cache/replicate/calibration.json``: a JSON list of figures, the newest per (model, dataset, device,
precision) kept.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from .errors import UserError
from .atomic import atomic_write_json

CALIBRATION_ENV = "REPLICATE_CALIBRATION"


def default_path() -> Path:
    return Path(os.environ.get(CALIBRATION_ENV) or "~/.cache/replicate/calibration.json").expanduser()


@dataclass(frozen=True)
class Figure:
    """One measured cost: seconds per training image (and per evaluated image, when measured)."""

    model: str  # the network's label (ModelSpec.label), e.g. ResNet56-S16U1
    dataset: str  # the network's dataset (its input size and classes), e.g. cifar10
    device: str  # results.device_name: "NVIDIA H100 80GB HBM3", "cpu (x86_64, 1 threads)"
    precision: str  # fp32 | bf16
    seconds_per_image: float
    eval_seconds_per_image: float | None = None
    batch: int | None = None
    source: str = "bench"  # bench | run <run id>
    recorded: str = ""  # UTC time

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.model, self.dataset, self.device, self.precision


def load(path: Path | None = None) -> list[Figure]:
    """The figures in ``path`` (default: :func:`default_path`); none when the file does not exist."""
    path = Path(path) if path is not None else default_path()
    if not path.is_file():
        return []
    names = {f.name for f in fields(Figure)}
    try:
        data = json.loads(path.read_text())
        return [Figure(**{k: v for k, v in item.items() if k in names}) for item in data]
    except (ValueError, TypeError, AttributeError) as error:
        raise UserError(f"calibration file {path} is unreadable ({error}); delete it or set ${CALIBRATION_ENV} "
                        f"to another file, and run python -m replicate.bench --calibrate again") from None


def record(figures: list[Figure], path: Path | None = None) -> Path:
    """Add ``figures`` to the file, each replacing an older one of the same key; returns the file's path."""
    path = Path(path) if path is not None else default_path()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    kept = {f.key: f for f in load(path)}
    for figure in figures:
        kept[figure.key] = Figure(**{**asdict(figure), "recorded": figure.recorded or now})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, [asdict(f) for f in sorted(kept.values(), key=lambda f: f.key)])
    return path


def find(figures: list[Figure], model: str, dataset: str, precision: str, device_kind: str | None) -> Figure | None:
    """The figure of a network and precision on a device kind: ``device_kind`` equal to, or contained in, the
    figure's device name, case ignored ("H100" finds "NVIDIA H100 80GB HBM3"); the newest of several."""
    if not device_kind:
        return None
    kind = device_kind.lower()
    matches = [f for f in figures if (f.model, f.dataset, f.precision) == (model, dataset, precision)
               and (kind == f.device.lower() or kind in f.device.lower())]
    return max(matches, key=lambda f: f.recorded, default=None)
