"""The results store: ``results/<table>/<run-id>/`` and the API the analysis layer reads it through.

Each run folder holds ``config.json`` (the resolved :class:`RunConfig`), ``provenance.json`` (code version,
packages, host, device, command line), ``metrics.jsonl`` (one record per epoch), ``gradstats.jsonl`` (when
gradient statistics are on), ``result.json`` (written last: its presence means *done*) and ``checkpoints/``
(not meant for version control).
"""
from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from .store import read_jsonl

DEFAULT_RESULTS = Path("results")
PACKAGES = ("torch", "torchvision", "fvcore", "submitit", "numpy", "pandas")


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def code_version() -> dict:
    """The git commit of the code and whether the working tree differs from it."""
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"commit": commit or "unknown", "dirty": dirty}


def provenance(device: str) -> dict:
    """What produced a run: code version, package versions, host, hardware and command line."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "code": code_version(),
        "packages": versions,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "device": device,
        "command": sys.argv,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def device_name(device) -> str:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _flatten(result: dict) -> dict:
    config = result["config"]
    row = {
        "table": result.get("table"), "row": result.get("row"), "label": result.get("label"),
        "run_id": result["run_id"], "model": config["model"], "dataset": config["dataset"],
        "data": "synthetic" if config["synthetic"] else config["data"], "profile": config["profile"],
        "protocol": config["protocol"], "seed": config["seed"], "orthogonality": config["orthogonality"],
        "epochs": config["recipe"]["epochs"], "params": result.get("params"), "macs": result.get("macs"),
        "wall_time_s": result.get("wall_time_s"), "device": result.get("provenance", {}).get("device"),
        "commit": result.get("provenance", {}).get("code", {}).get("commit"),
    }
    for stage in ("selected", "best", "final"):
        for key, value in (result.get(stage) or {}).items():
            row[f"{stage}_{key}"] = value
    return row


def load(results: Path = DEFAULT_RESULTS, table: str | None = None) -> pd.DataFrame:
    """One row per finished run (``result.json`` present), optionally for one table."""
    pattern = f"{table}/*/result.json" if table else "*/*/result.json"
    records = [_flatten(json.loads(p.read_text())) for p in sorted(Path(results).glob(pattern))]
    return pd.DataFrame(records)


def load_metrics(run_dir: Path) -> pd.DataFrame:
    """Per-epoch metrics of one run (finished or not)."""
    return pd.DataFrame(read_jsonl(Path(run_dir) / "metrics.jsonl"))


def load_gradstats(run_dir: Path) -> pd.DataFrame:
    """Shared-basis gradient statistics of one run: epoch, batch, basis, mean_abs, max_abs, l2."""
    return pd.DataFrame(read_jsonl(Path(run_dir) / "gradstats.jsonl"))
