"""SLURM execution through submitit (filled in by the SLURM issue)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SLURM (--cluster slurm)")
    group.add_argument("--cluster-config", default="default", help="profile name in slurm/ or a YAML path")
    group.add_argument("--wait", action="store_true", help="block until every submitted run finishes")


def submit(spec, runs, args) -> int:
    raise NotImplementedError
