"""Evaluate the authors' released checkpoints: top-1/top-5 test error beside the published and stored ones.

examples:
  python -m replicate.evaluate --checkpoint resnet56-s16u1x.pth            # identifies model and dataset
  python -m replicate.evaluate --checkpoint in1k.pth --data-root ~/data --device cuda --format json
  python -m replicate.evaluate table1 --checkpoints ~/released            # every released file of a table
  python -m replicate.evaluate table1 resnet56-s16u1-double=~/r56.pth     # or ROW=PATH pairs

A checkpoint is read by replicate.released (the authors' layout or ours; the model is identified from its
keys and shapes), or is one of this suite's own (<run>/checkpoints/best-N.pt or last.pt: the model, its data
and seed come from the run's config.json), the test split comes from the same data layer as training, with the authors' evaluation
transforms, and the arithmetic is float32. With a table, each evaluation is stored as a result of kind
"released" (<results>/<table>/released-*/), which replicate.tables shows in a column between the published
and the retrained errors. --synthetic evaluates on random images of the dataset's shape: a smoke test of the
whole path, whose errors say nothing about the checkpoint (stored under the smoke profile).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from . import published
from . import spec as specs
from .catalog import ZOO_DATASETS
from .complexity import lookup
from .config import PRECISION, PROFILES, RunConfig
from .datasets import build_splits
from .errors import HelpFormatter, Parser, UserError, check_writable_folder, cli, folder_option
from .models import ModelSpec, build
from .plan import run_config
from .released import Checkpoint, CheckpointError, load
from .results import DEFAULT_RESULTS, RunFolder, RunResult, Scores, check_store, device_name
from .train import Environment, accuracy, prepare_model

SOURCE = "f98cd9d"  # the README state whose download links are the released checkpoints
# ... and where a file of the published version's networks finds its printed row (2021 README, else 2020).
LATER_SOURCES = ("936a886", "8fdd8c0")
SUFFIXES = (".pth", ".pt", ".tar")
COLUMNS = {  # record field -> column title (with a table, the row comes first)
    "model": "model", "label": "authors' label", "dataset": "dataset",
    "published_top1_err": "published top-1 err", "published_top5_err": "published top-5 err",
    "stored_top1_err": "stored top-1 err", "top1_err": "re-evaluated top-1 err", "top5_err": "top-5 err",
    "images": "images", "seconds": "seconds", "device": "device",
}


def evaluate_checkpoint(path: str | Path, *, model: str | None = None, dataset: str | None = None,
                        data_root: str | Path | None = None, download: bool = False, synthetic: bool = False,
                        batch_size: int = 256, device: str = "cpu", progress: bool = True,
                        net: torch.nn.Module | None = None) -> dict[str, Any]:
    """Load a checkpoint (``model=None``: identified from the file) and measure its test errors.

    ``net``: the checkpoint already loaded (by :func:`find_checkpoints`), so that the file is not read again.

    Returns one flat record: the model, the authors' printed label and published errors (``None`` where they
    printed none), the error stored in the file (100 - its ``acc``), ours, and how it was measured.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
        raise UserError(f"device {device!r} is not available here; use --device cpu")
    run = suite_checkpoint(Path(path), model, dataset) if net is None else None
    if run is not None:
        net, config = run
    elif net is None:
        net = load(path, None if model in (None, "auto") else model, dataset)
    stored = net.checkpoint
    env = Environment(torch.device(device))
    if run is not None:  # the data the run trained on: its own split (and, when synthetic, its seed)
        synthetic = synthetic or config.synthetic
        splits = build_splits(config.data, root=data_root, download=download, synthetic=synthetic,
                              seed=config.seed, synthetic_sizes=config.synthetic_sizes)
    else:
        splits = build_splits(stored.dataset, root=data_root, download=download, synthetic=synthetic)
    start = time.perf_counter()
    scores = accuracy(prepare_model(net, env.device), splits.test, env, batch_size, PRECISION,
                      progress=progress and sys.stderr.isatty())
    seconds = time.perf_counter() - start
    entry = next((e for source in (SOURCE, *LATER_SOURCES)
                  for e in published.find(stored.model, stored.dataset, source=source)), None)
    if run is not None and (synthetic or config.custom or config.data != stored.dataset
                            or not config.model.is_default):
        entry = None  # another setting than the paper's network on its dataset: no published number beside it
    own = {"run_id": config.run_id, "sharing_depth": config.model.sharing_depth,
           "unshared_bn": config.model.unshared_bn} if run is not None else {}
    return {
        "checkpoint": str(path), "sha256": _sha256(Path(path)), "model": stored.model,
        "label": entry.label if entry else None, "dataset": stored.dataset,
        "data": "synthetic" if synthetic else "test",
        "published_top1_err": entry.top1_err if entry else None,
        "published_top5_err": entry.top5_err if entry else None,
        "stored_top1_err": stored.stored_top1_err, "stored_epoch": stored.epoch,
        "top1_err": round(100.0 - scores["top1"], 4), "top5_err": round(100.0 - scores["top5"], 4),
        "images": len(splits.test), "image_size": splits.image_size, "seconds": round(seconds, 2),
        "device": device_name(env.device), "batch_size": batch_size, **own,
    }


def suite_checkpoint(path: Path, model: str | None = None,
                     dataset: str | None = None) -> tuple[torch.nn.Module, RunConfig] | None:
    """A checkpoint this suite wrote (``{"model": state dict, ...}`` in ``<run>/checkpoints/``) as the run's network
    with its weights, and the run's config (read from ``config.json`` beside the file or in the folder above);
    None for any other file (the authors' format, ours from ``released.save``), which ``released`` reads."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
    except Exception:  # unreadable or unsafe: released.read says which, in its own words
        return None
    weights = data.get("model") if isinstance(data, dict) else None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        return None
    folder = next((RunFolder(p) for p in (path.parent, path.parent.parent) if (p / RunFolder.CONFIG).is_file()),
                  None)
    config = folder.config() if folder is not None else None
    if config is None:
        raise CheckpointError(f"{path}: a checkpoint of this suite, but no readable {RunFolder.CONFIG} of its run "
                              f"beside it or in the folder above, which says what network it is; evaluate it in "
                              f"its run folder (<results>/<table>/<run-id>/checkpoints/)")
    if model not in (None, "auto") and model.lower() != config.model.name.lower() or (
            dataset not in (None, config.model.dataset)):
        raise CheckpointError(f"{path}: a checkpoint of {config.model.name} ({config.model.dataset}), as its run's "
                              f"{RunFolder.CONFIG} says; leave out --model and --dataset")
    net = build(config.model)
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0][:120]
        raise CheckpointError(f"{path}: its weights do not fit {config.model.name} ({config.model.dataset}) of the "
                              f"run's {RunFolder.CONFIG} ({first}); the file is not this run's") from None
    progress = data.get("progress") if isinstance(data.get("progress"), dict) else {}
    epoch = data.get("epoch", progress.get("epoch"))
    accuracy = data.get("top1") if config.protocol == "paper" else None  # best-N.pt: its test accuracy
    records = (data.get("records") or {}).get("metrics") or [{}]
    if accuracy is None and records[-1].get("eval_split") == "test":  # last.pt: its epoch's record
        accuracy = records[-1].get("eval_top1")
    net.checkpoint = Checkpoint(str(path), {}, acc=float(accuracy) if accuracy is not None else None,
                                epoch=int(epoch) if epoch is not None else None, model=config.model.name,
                                dataset=config.model.dataset)
    return net.eval(), config


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- a table's released checkpoints ---------------------------------------------------------------------------
def find_checkpoints(table: specs.TableSpec, folder: Path | None, pairs: list[str],
                     loaded: dict[str, torch.nn.Module] | None = None) -> list[tuple[specs.Row, Path]]:
    """Each row of ``table`` with its released file: ``ROW=PATH`` pairs, and the files in ``folder`` whose keys
    and shapes identify a row's model (file names do not matter).

    ``loaded``, when given, receives by row id the network of each file chosen from ``folder`` (identifying it
    loaded it), so that evaluating it does not load the file a second time."""
    rows = {row.id: row for row in table.rows}
    found: dict[str, Path] = {}
    for pair in pairs:
        row_id, _, path = pair.partition("=")
        if row_id not in rows or not path:
            raise UserError(f"{pair!r}: give ROW=PATH with ROW one of {', '.join(rows)}")
        found[row_id] = Path(path).expanduser()
    by_model: dict = {}  # the first row of each model that trains as the paper did (not an ablated variant)
    for row in table.rows:
        if row.trains_as_paper:
            by_model.setdefault(row.model, row)
    for path in sorted(folder.iterdir()) if folder is not None else []:
        if path.suffix not in SUFFIXES or not path.is_file():
            continue
        try:
            model = load(path)
        except UserError as error:
            print(f"note: skipped {path}: {error}", file=sys.stderr)
            continue
        row = by_model.get(ModelSpec(model.config.name, model.config.dataset))
        if row is None:
            print(f"note: skipped {path}: {model.config.name} ({model.config.dataset}) is no row of {table.name}",
                  file=sys.stderr)
        elif row.id not in found:
            found[row.id] = path
            if loaded is not None:
                loaded[row.id] = model
    return [(rows[row_id], path) for row_id, path in found.items()]


def released_result(table: specs.TableSpec, row: specs.Row, record: dict[str, Any]) -> RunResult:
    """An evaluation as a stored result of kind ``released``, in the row's paper setting (smoke if synthetic)."""
    profile = PROFILES["smoke" if record["data"] == "synthetic" else "full"]
    config = run_config(row, profile, seed=0)
    scores = Scores(record["stored_epoch"], record["top1_err"], record["top5_err"])
    counts = lookup(config.model)
    provenance = {key: record[key] for key in ("checkpoint", "sha256", "stored_top1_err", "stored_epoch")}
    return RunResult(
        run_id=f"released-{config.slug}-{profile.name}-{record['sha256'][:10]}", config=config, selected=scores,
        final=scores, best=scores, params=counts.params, macs=counts.macs, wall_time_s=record["seconds"],
        provenance=provenance, table=table.name, row=row.id, label=row.label,
        published=row.published.reference() if row.published else None, kind="released",
        execution={"device": record["device"], "batch_size": record["batch_size"]})


def evaluate_table(table: specs.TableSpec, folder: Path | None, pairs: list[str], results: Path,
                   **options) -> list[dict[str, Any]]:
    """Evaluate every released checkpoint of a table and store each as a ``released`` result."""
    loaded: dict[str, torch.nn.Module] = {}
    checkpoints = find_checkpoints(table, folder, pairs, loaded)
    if not checkpoints:
        raise UserError(f"no released checkpoint of a {table.name} row in {folder or 'the ROW=PATH pairs'}: "
                        f"give the folder of the authors' .pth files or ROW=PATH pairs")
    records = []
    for row, path in checkpoints:
        record = evaluate_checkpoint(path, model=row.model.name, dataset=row.dataset, net=loaded.pop(row.id, None),
                                     **options)
        result = released_result(table, row, record)
        RunFolder(Path(results) / table.name / result.run_id).write_result(result)
        records.append({"row": row.id, **record})
    return records


def markdown(records: list[dict[str, Any]]) -> str:
    """The records as one table, with what its figures mean underneath."""
    columns = ({"row": "row"} if "row" in records[0] else {}) | COLUMNS
    cells = [["—" if record[key] is None else record[key] for key in columns] for record in records]
    lines = [tabulate(cells, headers=list(columns.values()), tablefmt="github", floatfmt=".2f"), ""]
    if any(record["data"] == "synthetic" for record in records):
        size = records[0]["image_size"]
        lines.append(f"SYNTHETIC data: random {size}x{size} images with the dataset's classes, a smoke test of the "
                     f"path; these errors say nothing about the checkpoints.")
    else:
        lines.append("re-evaluated: our top-1/top-5 error on the test split (float32).")
    lines.append(f"stored: 100 - the accuracy the training script saved in the file (its best epoch); published: "
                 f"the authors' README at {SOURCE}.")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m replicate.evaluate", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter, epilog=__doc__.split("\n", 2)[2], allow_abbrev=False)
    p.add_argument("target", nargs="*", metavar="TABLE [ROW=PATH ...]",
                   help="a table, and optionally row=checkpoint pairs (with --checkpoints: a folder to search)")
    p.add_argument("--checkpoint", type=Path, help="one .pth file (the authors' format or ours), or a run's "
                                                    "<run>/checkpoints/best-N.pt or last.pt (model from its "
                                                    "config.json)")
    p.add_argument("--checkpoints", type=Path, metavar="DIR", help="with TABLE: the folder of released files")
    p.add_argument("--model", default="auto", help="--checkpoint: zoo name, or 'auto' to identify it")
    p.add_argument("--dataset", choices=ZOO_DATASETS,
                   help="--checkpoint: the dataset (default: the file's, from its classifier)")
    p.add_argument("--data-root", type=Path, help="where the datasets are (default: the data layer's)")
    p.add_argument("--download", action="store_true", help="download CIFAR if missing")
    p.add_argument("--results", type=folder_option, default=DEFAULT_RESULTS, help="with TABLE: results store")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to evaluate")
    p.add_argument("--synthetic", action="store_true", help="random images of the dataset's shape (smoke test)")
    p.add_argument("--format", choices=("md", "json"), default="md", help="output format")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@cli
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)  # TABLE, ROW=PATH pairs and options in any order
    options = dict(data_root=args.data_root, download=args.download, synthetic=args.synthetic,
                   batch_size=args.batch_size, device=args.device, progress=not args.no_progress)
    if args.checkpoint and args.target or not (args.checkpoint or args.target):
        raise UserError("give either --checkpoint PATH, or a TABLE with --checkpoints DIR and/or ROW=PATH pairs")
    if args.checkpoint:
        records = [evaluate_checkpoint(args.checkpoint, model=args.model, dataset=args.dataset, **options)]
    else:
        table = specs.load(args.target[0])
        if args.checkpoints is not None and not args.checkpoints.is_dir():
            raise UserError(f"--checkpoints {args.checkpoints} is not a folder")
        check_store(args.results, [table.name])  # before minutes of evaluation, not after them
        check_writable_folder(args.results / table.name, "--results")
        records = evaluate_table(table, args.checkpoints, args.target[1:], args.results, **options)
    print(json.dumps(records if len(records) > 1 or args.target else records[0], indent=2)
          if args.format == "json" else markdown(records))
    if args.target:
        print(f"stored {len(records)} released result(s) in {args.results / table.name}; next: python -m "
              f"replicate.tables {table.name if table.shipped else table.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
