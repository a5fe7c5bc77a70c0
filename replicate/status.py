"""Where every run of a table stands: python -m replicate.status TABLE [--profile P] [--results DIR].

done (a readable ``result.json``) / corrupt (an unreadable one: a relaunch redoes it) / running / pending /
stuck / failed (with the last lines of its error) / not submitted, from the results store plus, for a run a
backend submitted, that backend's word (``sacct`` for SLURM): the submission ledger names the backend.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from . import plan as planning
from . import spec as specs
from .backends import STATES, run_states
from .config import PRECISIONS, PROFILES, PROTOCOLS, Setting, describe_overrides
from .errors import Parser, cli, folder_option
from .results import DEFAULT_RESULTS, check_store, run_folders


def other_settings(results: Path, table: str, shown: Setting,
                   planned: frozenset[str] = frozenset()) -> dict[Setting, int]:
    """Setting -> run folders, for the settings other than ``shown`` with runs stored (``planned``: the run ids
    shown, never counted elsewhere)."""
    counts: Counter = Counter()
    for folder in run_folders(results, table):
        config = folder.config()
        setting = Setting.of(config) if config else None
        if setting is not None and setting != shown and folder.run_id not in planned:
            counts[setting] += 1
    return dict(counts)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m replicate.status", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    parser.add_argument("table", help="a table name or spec file")
    parser.add_argument("--results", type=folder_option, default=DEFAULT_RESULTS, help="results store")
    parser.add_argument("--profile", choices=tuple(PROFILES), default="full", help="profile to report")
    parser.add_argument("--protocol", choices=PROTOCOLS, help="protocol to report (default: the profile's, "
                                                             "else the spec's)")
    parser.add_argument("--precision", choices=PRECISIONS, help="precision to report (default: the spec's)")
    parser.add_argument("--rows", help="comma-separated row ids or glob patterns")
    parser.add_argument("--seeds", type=int, help="seeds per row (default: the spec's)")
    parser.add_argument("--set", type=planning.override_option, action="append", default=[], metavar="KEY=VALUE",
                        dest="overrides", help="the overrides the runs were launched with (run --set), repeatable")
    args = parser.parse_args(argv)
    spec = specs.load(args.table)
    check_store(args.results, [spec.name])
    runs = planning.expand(spec, args.results, args.profile, args.seeds, args.rows, args.protocol, args.precision,
                           dict(args.overrides))
    protocol, precision = runs[0].config.protocol, runs[0].config.training.precision
    custom = describe_overrides(args.overrides)
    print(f"{spec.name}: profile {args.profile}, protocol {protocol}, precision {precision}"
          + (f", custom recipe ({custom})" if custom else "") + f", results in {args.results / spec.name}")
    states = run_states(runs, args.results, spec.name)
    width = max(len(s.run.row.id) for s in states)
    for s in states:
        job = f"job {s.job_id}" if s.job_id else ""
        print(f"{s.run.row.id:<{width}}  seed {s.run.config.seed}  {s.state:<13} {job:<12} {s.detail}".rstrip())
    counts = {name: sum(s.state == name for s in states) for name in STATES}
    print(", ".join(f"{n} {name}" for name, n in counts.items() if n) + f" ({len(states)} runs)")
    shown = Setting(args.profile, protocol, precision, tuple(sorted(dict(args.overrides).items())))
    others = other_settings(args.results, spec.name, shown, frozenset(run.run_id for run in runs))
    for other, count in sorted(others.items()):
        changed = describe_overrides(other.overrides)
        print(f"also in the store: {count} run folder(s) of profile {other.profile}, protocol {other.protocol}, "
              f"precision {other.precision}" + (f", custom recipe ({changed})" if changed else "")
              + f": python -m replicate.status {spec.argument} {other.options}{other.set_options}"
              + ("" if args.results == DEFAULT_RESULTS else f" --results {args.results}"))
    return 1 if counts["failed"] or counts["corrupt"] or counts["stuck"] else 0


if __name__ == "__main__":
    sys.exit(main())
