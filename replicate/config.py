"""Every default of the suite in one place: training recipes (SPEC §4), profiles, and the run config.

A *recipe* is the paper's schedule for a dataset; a *profile* says how much of it to run (``full`` = the paper,
``smoke`` = synthetic data and a few batches for first contact and CI, ``mini`` = real Fashion-MNIST at CPU
scale); a :class:`RunConfig` is one fully resolved run. Its hash is the run id, so a run is identified by what
it computes, never by where or when it ran.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class Phase:
    """A stretch of training at one learning rate, from ``start`` (1-based epoch) to the next phase."""

    start: int
    lr: float
    restart: bool = False  # start from the best checkpoint's weights with a fresh optimizer (CIFAR-100)


@dataclass(frozen=True)
class Recipe:
    name: str
    epochs: int
    batch_size: int
    weight_decay: float
    phases: tuple[Phase, ...]
    momentum: float = 0.9  # SGD, no Nesterov, weight decay on every parameter (SPEC §4)
    gpus: int = 1  # GPUs the paper used (ImageNet: 4, batch split across them)
    validation: int = 5_000  # images held out of the training set by the clean protocol

    def lr_at(self, epoch: int) -> float:
        return self.phase_at(epoch).lr

    def phase_at(self, epoch: int) -> Phase:
        return [p for p in self.phases if p.start <= epoch][-1]

    def scaled(self, epochs: int, batch_size: int, validation: int) -> "Recipe":
        """The same schedule compressed to ``epochs`` (phase starts scaled; empty phases dropped)."""
        phases, seen = [], set()
        for phase in self.phases:
            start = 1 if phase.start == 1 else round((phase.start - 1) * epochs / self.epochs) + 1
            if start <= epochs and start not in seen:
                phases.append(replace(phase, start=start))
                seen.add(start)
        return replace(self, epochs=epochs, batch_size=batch_size, validation=validation,
                       phases=tuple(phases), gpus=1)


RECIPES: dict[str, Recipe] = {
    # SPEC §4.1: 300 epochs, drops at 150/225, batch 256, wd 5e-4.
    "cifar10": Recipe("cifar10", 300, 256, 5e-4, (Phase(1, 0.1), Phase(151, 0.01), Phase(226, 0.001))),
    # SPEC §4.2: three phases, each restarting from the best checkpoint with a new optimizer.
    "cifar100": Recipe("cifar100", 300, 256, 5e-4,
                       (Phase(1, 0.1), Phase(151, 0.01, restart=True), Phase(226, 0.001, restart=True))),
    # SPEC §4.3: ResNet34 150 epochs, batch 512 on 4 GPUs, wd 1e-4.
    "imagenet-resnet": Recipe("imagenet-resnet", 150, 512, 1e-4,
                              (Phase(1, 0.1), Phase(61, 0.01), Phase(101, 0.001), Phase(141, 0.0001)),
                              gpus=4, validation=50_000),
    # SPEC §4.3: MobileNetV2 300 epochs, wd 1e-5.
    "imagenet-mobilenet": Recipe("imagenet-mobilenet", 300, 512, 1e-5,
                                 (Phase(1, 0.1), Phase(151, 0.01), Phase(226, 0.001), Phase(286, 0.0001)),
                                 gpus=4, validation=50_000),
}


@dataclass(frozen=True)
class Profile:
    """How much of a recipe to run, and on which data."""

    name: str
    description: str
    synthetic: bool = False
    data: str | None = None  # replaces the row's dataset (mini: fashion-mnist)
    epochs: int | None = None  # None = the recipe's
    batch_size: int | None = None
    validation: int | None = None
    train_subset: int | None = None
    synthetic_sizes: tuple[int, int] = (256, 128)
    model_depth: int | None = None  # CIFAR-10 ResNet depth used instead of the row's (mini profile)
    protocol: str | None = None  # None = the spec's
    grad_stats: tuple[int, int] | None = None  # gradient statistics for every shared run (when the row has none)


PROFILES: dict[str, Profile] = {
    "full": Profile("full", "the paper's recipe on the real dataset"),
    "smoke": Profile("smoke", "synthetic data of the right shape, 4 batches x 2 epochs: seconds per run on CPU",
                     synthetic=True, epochs=2, batch_size=64, validation=64),
    # Sized so that the CIFAR-10 ablation (11 rows x 2 seeds) fits in about 75 minutes on 2 CPU cores.
    "mini": Profile("mini", "real Fashion-MNIST at CPU scale: ResNet20 variants, 5 000 training images, "
                    "6 epochs, clean protocol", data="fashion-mnist", epochs=6, batch_size=128,
                    validation=2_000, train_subset=5_000, model_depth=20, protocol="clean", grad_stats=(5, 1)),
}

PROTOCOLS = ("paper", "clean")


@dataclass(frozen=True)
class RunConfig:
    """One run, fully resolved: everything that changes what is computed, and nothing else."""

    model: str  # zoo name, canonical paper notation
    dataset: str  # the architecture's dataset (cifar10 | cifar100 | imagenet)
    data: str  # the data actually trained on (dataset, fashion-mnist) ...
    synthetic: bool  # ... or synthetic data of its shape
    recipe: Recipe
    profile: str
    protocol: str  # paper | clean
    seed: int
    orthogonality: bool = True
    ortho_mode: str | None = None  # None = the reference's definition for the dataset
    lambda_r: float = 10.0
    sharing_depth: int | None = None
    unshared_bn: bool = True
    train_subset: int | None = None
    synthetic_sizes: tuple[int, int] = (256, 128)
    grad_stats: tuple[int, int] = (0, 0)  # (every N batches, every M epochs); 0 = off

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def run_id(self) -> str:
        """Readable prefix + content hash of the config: identical configs share one id and one folder."""
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
        slug = self.model.lower().replace("*", "x")
        return f"{slug}-{self.profile}-seed{self.seed}-{digest}"

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        data = dict(data)
        recipe = dict(data.pop("recipe"))
        recipe["phases"] = tuple(Phase(**p) for p in recipe["phases"])
        names = {f.name for f in fields(cls)}
        for key in ("synthetic_sizes", "grad_stats"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(recipe=Recipe(**recipe), **{k: v for k, v in data.items() if k in names})
