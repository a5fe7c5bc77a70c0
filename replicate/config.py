"""Every default of the suite in one place: recipes, profiles, training knobs, verdicts and the run config.

Read it top to bottom as the list of what a run can vary, each key with its default and why (pycls keeps its
defaults the same way). A *recipe* is the paper's schedule for a dataset; a *profile* says how much of it to
run (``full`` = the paper, ``smoke`` = synthetic data and a few batches for first contact and CI, ``mini`` =
real Fashion-MNIST at CPU scale); :class:`Training` holds the knobs a table row may change, defaulting to the
paper's values; a :class:`RunConfig` is one fully resolved run. Its canonical form hashes into the run id, so
a run is identified by what it computes, never by where or when it ran. Cluster defaults are the shipped
profile ``clusters/default.yaml`` (a user's profile is layered over it).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

from .catalog import DATASETS, display_name
from .zoo import ModelSpec


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
    momentum: float = 0.9  # SGD, no Nesterov, weight decay on every parameter (docs/paper.md: Training recipes)
    gpus: int = 1  # GPUs the paper used (ImageNet: 4, batch split across them)
    validation: int = DATASETS["cifar10"].validation  # images held out of the training set by the clean protocol

    @property
    def per_gpu_batch(self) -> int:
        """Images per BatchNorm step in the paper's runs: the batch split across its GPUs."""
        return self.batch_size // self.gpus

    def lr_at(self, epoch: int) -> float:
        return self.phase_at(epoch).lr

    def phase_at(self, epoch: int) -> Phase:
        return [p for p in self.phases if p.start <= epoch][-1]

    def scaled(self, epochs: int, batch_size: int, validation: int) -> "Recipe":
        """The same schedule compressed to ``epochs`` (phase starts scaled; empty phases dropped), on as many
        GPUs as the paper's: a smoke run of an ImageNet row rehearses the multi-GPU job it stands for."""
        phases, seen = [], set()
        for phase in self.phases:
            start = 1 if phase.start == 1 else round((phase.start - 1) * epochs / self.epochs) + 1
            if start <= epochs and start not in seen:
                phases.append(replace(phase, start=start))
                seen.add(start)
        return replace(self, epochs=epochs, batch_size=batch_size, validation=validation, phases=tuple(phases))


IMAGENET_VALIDATION = DATASETS["imagenet"].validation  # what the ImageNet recipes hold out (CIFAR: the default)
RECIPES: dict[str, Recipe] = {
    # docs/paper.md: Training recipes: 300 epochs, drops at 150/225, batch 256, wd 5e-4.
    "cifar10": Recipe("cifar10", 300, 256, 5e-4, (Phase(1, 0.1), Phase(151, 0.01), Phase(226, 0.001))),
    # docs/paper.md: Training recipes: three phases, each restarting from the best checkpoint with a new optimizer.
    "cifar100": Recipe("cifar100", 300, 256, 5e-4,
                       (Phase(1, 0.1), Phase(151, 0.01, restart=True), Phase(226, 0.001, restart=True))),
    # docs/paper.md: Training recipes: ResNet34 150 epochs, batch 512 on 4 GPUs, wd 1e-4.
    "imagenet-resnet": Recipe("imagenet-resnet", 150, 512, 1e-4,
                              (Phase(1, 0.1), Phase(61, 0.01), Phase(101, 0.001), Phase(141, 0.0001)),
                              gpus=4, validation=IMAGENET_VALIDATION),
    # docs/paper.md: Training recipes: MobileNetV2 300 epochs, wd 1e-5.
    "imagenet-mobilenet": Recipe("imagenet-mobilenet", 300, 512, 1e-5,
                                 (Phase(1, 0.1), Phase(151, 0.01), Phase(226, 0.001), Phase(286, 0.0001)),
                                 gpus=4, validation=IMAGENET_VALIDATION),
    # docs/paper.md: The published version's recipes (the 2021 README's commands): batch 256 on 4 GPUs.
    "imagenet-resnet-2021": Recipe("imagenet-resnet-2021", 150, 256, 1e-4,
                                   (Phase(1, 0.1), Phase(61, 0.01), Phase(101, 0.001), Phase(141, 0.0001)),
                                   gpus=4, validation=IMAGENET_VALIDATION),
    # ... ResNet50-Shared alone is printed with weight decay 4e-5.
    "imagenet-resnet50-shared-2021": Recipe("imagenet-resnet50-shared-2021", 150, 256, 4e-5,
                                            (Phase(1, 0.1), Phase(61, 0.01), Phase(101, 0.001),
                                             Phase(141, 0.0001)), gpus=4, validation=IMAGENET_VALIDATION),
    # ... MobileNetV2: the last step halves the learning rate instead of dividing it by 10.
    "imagenet-mobilenet-2021": Recipe("imagenet-mobilenet-2021", 300, 256, 1e-5,
                                      (Phase(1, 0.1), Phase(151, 0.01), Phase(226, 0.001), Phase(286, 0.0005)),
                                      gpus=4, validation=IMAGENET_VALIDATION),
}


# -- how much of a recipe to run ---------------------------------------------------------------------------
SYNTHETIC_SIZES = (256, 128)  # training and test images of synthetic data (smoke profile, tests)


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
    synthetic_sizes: tuple[int, int] = SYNTHETIC_SIZES
    model_depth: int | None = None  # CIFAR-10 ResNet depth used instead of the row's (mini profile)
    protocol: str | None = None  # None = the spec's
    grad_stats: tuple[int, int] | None = None  # gradient statistics for every shared run (when the row has none)
    needs_gpu: bool = False  # the paper's recipe at full scale: refused on a CPU unless asked for

    def applies(self, dataset: str) -> bool:
        """A profile that swaps the data (mini: Fashion-MNIST) covers the rows of the dataset it stands in for
        (CIFAR-10) only."""
        return self.data is None or DATASETS[self.data].stands_in_for == dataset

    def model(self, spec: ModelSpec) -> ModelSpec:
        """The network this profile trains for a row's (mini: a shallower CIFAR-10 ResNet of the same variant)."""
        return spec if self.model_depth is None else spec.at_depth(self.model_depth)

    @property
    def is_proxy(self) -> bool:
        """Trains something other than the paper's setting on real data: its results are a proxy's, not the paper's."""
        return not self.synthetic and (self.data is not None or self.model_depth is not None
                                       or self.train_subset is not None or self.epochs is not None)

    def trained(self) -> str:
        """What this profile trains, in words: "Fashion-MNIST proxy: ResNet20 variants, 5 000 training images,
        6 epochs" (the paper's setting: "the paper's recipe on the row's dataset")."""
        if self.synthetic:
            return "synthetic data (the numbers say nothing about the paper's claims)"
        if not self.is_proxy:
            return "the paper's recipe on the row's dataset"
        parts = [f"ResNet{self.model_depth} variants"] if self.model_depth else []
        if self.train_subset:
            parts.append(f"{self.train_subset:,} training images".replace(",", " "))
        if self.epochs:
            parts.append(f"{self.epochs} epochs")
        return f"{display_name(self.data) if self.data else 'reduced'} proxy: {', '.join(parts)}"


PROFILES: dict[str, Profile] = {
    "full": Profile("full", "the paper's recipe on the real dataset", needs_gpu=True),
    "smoke": Profile("smoke", "synthetic data of the right shape, 4 batches x 2 epochs: seconds per run on CPU",
                     synthetic=True, epochs=2, batch_size=64, validation=64),
    # Sized so that the CIFAR-10 ablation (11 rows x 2 seeds) fits in about 75 minutes on 2 CPU cores.
    "mini": Profile("mini", "real Fashion-MNIST at CPU scale: ResNet20 variants, 5 000 training images, "
                    "6 epochs, clean protocol", data="fashion-mnist", epochs=6, batch_size=128,
                    validation=2_000, train_subset=5_000, model_depth=20, protocol="clean", grad_stats=(5, 1)),
}

PROTOCOLS = ("paper", "clean")  # paper: best test epoch, as the authors; clean: a validation split selects
PRECISIONS = ("fp32", "bf16")
PRECISION = "fp32"  # the default: fp32 as the authors (with TF32 convolutions where the GPU has them)


# -- what a table row may change (defaults: the paper's values) --------------------------------------------
@dataclass(frozen=True)
class Training:
    """The training knobs of a row. A row that keeps every one at the paper's value is comparable with it."""

    orthogonality: bool = True  # add lambda_r * R (rows whose model shares nothing always train plain CE)
    ortho_mode: str | None = None  # one of ORTHO_MODES; None = the reference's for the dataset (default_ortho_mode)
    lambda_r: float = 10.0  # weight of the orthogonality term: 10 in every reference script and command
    precision: str = PRECISION  # one of PRECISIONS: bf16 is autocast, a different run

    @classmethod
    def paper(cls, model: ModelSpec) -> "Training":
        """The paper's knobs for a model: orthogonality exactly when it has shared bases."""
        return cls(orthogonality=model.config.layout.shares)


ORTHO_MODES = ("cifar10", "shared")  # the reference's two definitions of R (ortho.py says what each sums)


def default_ortho_mode(dataset: str) -> str:
    """The reference's definition for a dataset: unique filters included on CIFAR-10 only."""
    return "cifar10" if dataset == "cifar10" else "shared"


ROW_DEFAULTS = {"protocol": "paper", "seeds": 1, "grad_stats": None}  # None: no gradient statistics


@dataclass(frozen=True)
class Verdicts:
    """How a table decides its claims and compares its rows with the paper (a spec may override each)."""

    confidence: float = 0.95  # of every interval a table prints (Student's t)
    margin: float = 0.5  # points: "matches or beats" holds when the error is provably at most this much higher
    tolerance: float = 0.5  # points: a row is "within tolerance" of the paper when they differ by no more


# -- what --set KEY=VALUE (and a spec row's ``set:``) may change: the schema of a run's overrides -----------
@dataclass(frozen=True)
class Knob:
    """One knob an override may set: its type, its smallest value and what it means."""

    kind: type  # int or float
    low: float
    low_allowed: bool  # whether ``low`` itself is allowed
    meaning: str

    def describe(self, key: str) -> str:
        number = "an integer" if self.kind is int else "a number"
        return f"{key} must be {number} {'>=' if self.low_allowed else '>'} {self.low:g}"


# An overridden run is a custom recipe: its own setting and run id, never compared with the paper's numbers.
OVERRIDES: dict[str, Knob] = {
    "epochs": Knob(int, 1, True, "epochs; the schedule's phase starts are scaled to them, as the profiles do"),
    "lr": Knob(float, 0, False, "the first phase's learning rate; later phases scaled by the same factor"),
    "batch_size": Knob(int, 1, True, "images per step (split across the processes of a multi-GPU run)"),
    "weight_decay": Knob(float, 0, True, "SGD weight decay, on every parameter"),
    "momentum": Knob(float, 0, True, "SGD momentum"),
    "lambda_r": Knob(float, 0, True, "weight of the orthogonality term"),
    "validation": Knob(int, 0, True, "images held out of the training set by the clean protocol"),
}


def override_value(key: str, value) -> int | float:
    """``value`` checked against the knob ``key`` (a YAML number, or the text after ``KEY=``), as its type;
    ``ValueError`` naming the key and the valid keys (or values) otherwise."""
    import math

    keys = ", ".join(OVERRIDES)
    if key not in OVERRIDES:
        raise ValueError(f"unknown key {key!r}; valid keys: {keys}")
    knob = OVERRIDES[key]
    problem = f"{knob.describe(key)}, not {value!r} (valid keys: {keys})"
    if isinstance(value, bool):
        raise ValueError(problem)
    try:
        number = knob.kind(value) if isinstance(value, str) else value
    except ValueError:
        raise ValueError(problem) from None
    if knob.kind is int and not isinstance(number, int) or not isinstance(number, (int, float)):
        raise ValueError(problem)
    if not math.isfinite(number) or number < knob.low or (number == knob.low and not knob.low_allowed):
        raise ValueError(problem)
    return knob.kind(number)


def parse_override(text: str) -> tuple[str, int | float]:
    """``KEY=VALUE`` from the command line, checked (``ValueError`` with the valid keys otherwise)."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise ValueError(f"{text!r} is not KEY=VALUE; valid keys: {', '.join(OVERRIDES)}")
    return key.strip(), override_value(key.strip(), value.strip())


def describe_overrides(overrides) -> str:
    """'epochs=1, lr=0.05': what a custom recipe changes (``overrides``: pairs or a mapping)."""
    return ", ".join(f"{key}={value:g}" for key, value in sorted(dict(overrides).items()))


def apply_overrides(recipe: Recipe, training: Training, overrides: dict) -> tuple[Recipe, Training]:
    """The recipe and knobs with the overrides applied (``epochs`` is applied by the caller, who scales the
    paper's schedule once): ``lr`` sets the first phase's rate and scales the others by the same factor."""
    recipe = replace(recipe, **{k: overrides[k] for k in ("batch_size", "weight_decay", "momentum", "validation")
                                if k in overrides})
    if "lr" in overrides:
        factor = overrides["lr"] / recipe.phases[0].lr
        recipe = replace(recipe, phases=tuple(replace(p, lr=float(f"{p.lr * factor:.12g}")) for p in recipe.phases))
    if "lambda_r" in overrides:
        training = replace(training, lambda_r=float(overrides["lambda_r"]))
    return recipe, training


# -- one resolved run ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """One run, fully resolved: everything that changes what is computed, and nothing else."""

    model: ModelSpec  # the network trained (the mini profile trains a shallower one than the row's)
    data: str  # the data actually trained on (dataset, fashion-mnist) ...
    synthetic: bool  # ... or synthetic data of its shape
    recipe: Recipe
    profile: str
    protocol: str  # paper | clean
    seed: int
    training: Training
    train_subset: int | None
    synthetic_sizes: tuple[int, int]
    grad_stats: tuple[int, int]  # (every N batches, every M epochs); 0 = off
    overrides: tuple[tuple[str, int | float], ...] = ()  # --set / a row's set: (key, value), sorted; () = none

    @property
    def custom(self) -> bool:
        """A custom recipe (something overridden): its own setting, never compared with the paper's numbers."""
        return bool(self.overrides)

    # What the protocol means for a run, in one place (plans price it, training follows it):
    @property
    def held_out(self) -> int:
        """Training images set aside as the validation split that selects the epoch: the recipe's under the clean
        protocol; none under the paper's, which selects on the test set."""
        return self.recipe.validation if self.protocol == "clean" else 0

    @property
    def selection_split(self) -> str:
        """The split each epoch is scored on to select the reported one: ``val`` (clean) or ``test`` (paper)."""
        return "val" if self.held_out else "test"

    def to_dict(self) -> dict:
        """The stored form (``config.json``): flat, model options beside the name, as since the first runs."""
        data = {"model": self.model.name, "dataset": self.model.dataset, "sharing_depth": self.model.sharing_depth,
                "unshared_bn": self.model.unshared_bn, "recipe": asdict(self.recipe), **asdict(self.training)}
        for key in ("data", "synthetic", "profile", "protocol", "seed", "train_subset"):
            data[key] = getattr(self, key)
        data["synthetic_sizes"], data["grad_stats"] = list(self.synthetic_sizes), list(self.grad_stats)
        data["overrides"] = dict(self.overrides)
        return data

    def canonical(self) -> dict:
        """What the run id hashes: the stored form, less any later field at its default (see ``ID_FIELDS``)."""
        return {k: v for k, v in self.to_dict().items() if k in ID_FIELDS or v != LATER_DEFAULTS[k]}

    @property
    def run_id(self) -> str:
        """Readable prefix + content hash: identical configs share one id and one folder."""
        digest = hashlib.sha256(json.dumps(self.canonical(), sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.slug}-{self.profile}-seed{self.seed}-{digest}"

    @property
    def slug(self) -> str:
        """The model's name as a run-id prefix: lower case, no '*' (folder names stay portable)."""
        return self.model.name.lower().replace("*", "x")

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        recipe = dict(data["recipe"])
        recipe["phases"] = tuple(Phase(**p) for p in recipe["phases"])
        model = ModelSpec(data["model"], data["dataset"], data.get("sharing_depth"), data.get("unshared_bn", True))
        training = Training(**{f.name: data[f.name] for f in fields(Training) if f.name in data})
        return cls(model=model, data=data["data"], synthetic=data["synthetic"], recipe=Recipe(**recipe),
                   profile=data["profile"], protocol=data["protocol"], seed=data["seed"], training=training,
                   train_subset=data.get("train_subset"),
                   synthetic_sizes=tuple(data.get("synthetic_sizes", SYNTHETIC_SIZES)),
                   grad_stats=tuple(data.get("grad_stats", (0, 0))),
                   overrides=tuple(sorted((data.get("overrides") or {}).items())))


@dataclass(frozen=True, order=True)
class Setting:
    """What a table's runs were trained under besides the rows: each setting is a table of its own, never mixed
    with another, and one set of command options selects it (``options``)."""

    profile: str
    protocol: str
    precision: str = PRECISION
    overrides: tuple[tuple[str, int | float], ...] = ()  # run --set: a custom recipe, a setting of its own

    @classmethod
    def of(cls, config: RunConfig) -> "Setting":
        """The setting a run was trained under."""
        return cls(config.profile, config.protocol, config.training.precision, config.overrides)

    @property
    def is_paper(self) -> bool:
        """The paper's own setting (full profile, paper protocol, default precision, nothing overridden)."""
        return (self.profile, self.protocol, self.precision, self.overrides) == ("full", "paper", PRECISION, ())

    @property
    def label(self) -> str:
        return f"{self.profile} profile, {self.protocol} protocol" + (
            f", {self.precision}" if self.precision != PRECISION else "") + (
            f", custom recipe ({describe_overrides(self.overrides)})" if self.overrides else "")

    @property
    def suffix(self) -> str:
        """File-name suffix of its generated table: '' for the paper's setting."""
        if self.is_paper:
            return ""
        custom = "-custom-" + "-".join(f"{key}{value:g}" for key, value in self.overrides) if self.overrides else ""
        return (f".{self.profile}-{self.protocol}" + (f"-{self.precision}" if self.precision != PRECISION else "")
                + custom)

    @property
    def options(self) -> str:
        """The options that select it in a suggested command: --protocol and --precision only where they differ
        from what --profile alone gives (the overrides are not included: see ``set_options``)."""
        usual = (PROFILES[self.profile].protocol if self.profile in PROFILES else None) or ROW_DEFAULTS["protocol"]
        return (f"--profile {self.profile}" + (f" --protocol {self.protocol}" if self.protocol != usual else "")
                + (f" --precision {self.precision}" if self.precision != PRECISION else ""))

    @property
    def set_options(self) -> str:
        """' --set epochs=1 --set lr=0.05': the overrides as command options ('' for none)."""
        return "".join(f" --set {key}={value:g}" for key, value in self.overrides)


# The fields every run id has hashed since the first stored results. A field added later enters the hash only
# when it differs from its default, so adding a knob never turns stored runs into "not run" (tests pin ids).
ID_FIELDS = frozenset({"model", "dataset", "data", "synthetic", "recipe", "profile", "protocol", "seed",
                       "orthogonality", "ortho_mode", "lambda_r", "sharing_depth", "unshared_bn", "train_subset",
                       "synthetic_sizes", "grad_stats"})
LATER_DEFAULTS = {**{f.name: f.default for f in fields(Training) if f.name not in ID_FIELDS}, "overrides": {}}
