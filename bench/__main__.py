"""``python -m bench [--quick] [--out FILE] [NAME ...]``: run some or all benchmarks (see BENCHMARKS.md).

Prints one table per benchmark and writes every result to a JSON file. Benchmarks that need the test
cluster (launch, bootstrap, campaign, training) must run as root, with ``tests/cluster/up`` done.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

from bench._stats import Result, table, write_json

ALL = ("launch", "bootstrap", "campaign", "training", "handoff", "serving", "router", "scheduler")


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"bench.{name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(ALL)}")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 1-2 repetitions, tiny sizes")
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"), help="JSON results file")
    modules = {name: _module(name) for name in ALL}
    for module in modules.values():
        module.add_arguments(parser)
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in ALL]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    results: list[Result] = []
    failed = []
    for name in args.names or ALL:
        t0 = time.monotonic()
        print(f"-- {name}{' --quick' if args.quick else ''} ...", file=sys.stderr, flush=True)
        try:
            result = modules[name].run(args, args.quick)
        except Exception as exc:  # report and go on with the next benchmark
            traceback.print_exc()
            failed.append(name)
            result = Result(name, args.quick)
            result.facts["error"] = f"{type(exc).__name__}: {exc}"
        result.facts.setdefault("wall_s", round(time.monotonic() - t0, 1))
        results.append(result)
        print(table(result), flush=True)
        write_json(args.out, results)  # after each benchmark: a crash later keeps what was measured
    print(f"results: {args.out}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
