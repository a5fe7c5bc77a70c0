"""Crash-safe files: atomic writes, JSON lines, and rotating checkpoints.

Every file of the results store is written to a temporary name in the same folder, flushed to disk and
renamed over the target, so a reader (or a run killed at any instant) sees the old content or the new, never
half of it. Checkpoints keep the previous generation, so a corrupt latest one costs one epoch, not the run.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a torn last line (killed mid-append) is ignored."""
    return parse_jsonl(Path(path).read_bytes()) if Path(path).is_file() else []


def parse_jsonl(content: bytes) -> list[dict]:
    """Records of JSON-lines bytes; a torn line (a run appending right now, or killed mid-append) ends them."""
    records = []
    for line in content.decode(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def append_jsonl(path: Path, records: list[dict]) -> None:
    if not records:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        handle.flush()
        os.fsync(handle.fileno())


def truncate_jsonl(path: Path, keep) -> None:
    """Rewrite a JSON-lines file with only the records ``keep(record)`` accepts (resume after a crash)."""
    if Path(path).is_file():
        content = Path(path).read_bytes()
        kept = "".join(json.dumps(r, sort_keys=True) + "\n" for r in parse_jsonl(content) if keep(r)).encode()
        if kept != content:  # a log that already agrees is left as it is (a rebuild touches no log)
            atomic_write_bytes(path, kept)


class Busy(RuntimeError):
    """Another process holds the lock of this run folder (the same run launched twice at once)."""


@contextlib.contextmanager
def exclusive(directory: Path):
    """Hold an exclusive lock on a run folder while training it; the OS releases it if the process dies."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"{directory} is being trained by another process") from None
        yield


def save_checkpoint(directory: Path, name: str, state: dict, keep_previous: bool = True) -> None:
    """Write ``name.pt`` atomically; the one it replaces becomes ``name.prev.pt``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.pt"
    buffer = _serialise(state)
    if keep_previous and target.exists():
        os.replace(target, directory / f"{name}.prev.pt")
    atomic_write_bytes(target, buffer)


def _serialise(state: dict) -> bytes:
    import io

    import torch  # here, not at the top: the results store's readers (tables, figures) need no torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def read_checkpoint(path: Path) -> dict | None:
    """One checkpoint file exactly (``weights_only``, no fallback to another generation), or None if it is
    missing or unreadable."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True) if Path(path).is_file() else None
    except Exception:  # truncated, corrupt or unsafe: not a checkpoint the engine wrote
        return None


def load_checkpoint(directory: Path, name: str) -> dict | None:
    """The newest readable generation of a checkpoint (``weights_only``); warns when it falls back."""
    import torch

    for candidate in (Path(directory) / f"{name}.pt", Path(directory) / f"{name}.prev.pt"):
        if not candidate.exists():
            continue
        try:
            return torch.load(candidate, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated or corrupt file: the previous generation is still good
            warnings.warn(f"checkpoint {candidate} is unreadable ({type(error).__name__}); "
                          f"using the previous one", stacklevel=2)
    return None
