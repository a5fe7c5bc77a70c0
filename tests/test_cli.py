"""What every command shares: exact option names, and each failure a clean line (``replicate.errors``)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO


def _parser_calls() -> list[tuple[str, ast.Call]]:
    """Every ``ArgumentParser(...)`` call in the package's source, with the file it is in."""
    calls = []
    for path in sorted((REPO / "replicate").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                    == "ArgumentParser":
                calls.append((str(path.relative_to(REPO)), node))
    return calls


def test_no_parser_takes_an_abbreviation_for_an_option():
    """``--seed 2`` must not pass for ``--seeds 2``: every parser is built with ``allow_abbrev=False``."""
    calls = _parser_calls()
    assert len(calls) >= 8
    lax = [f"{path}:{call.lineno}" for path, call in calls
           if not any(k.arg == "allow_abbrev" and isinstance(k.value, ast.Constant) and k.value.value is False
                      for k in call.keywords)]
    assert not lax, f"parsers that accept abbreviations: {lax}"
