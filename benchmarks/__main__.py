"""`make bench`: every benchmark, each comparing our code with a baseline run in the same process.

Usage: python -m benchmarks [extract|normalize|sink|state_latency|full_sync|sizing|live ...]
(all by default; `live` alone takes about half an hour: two five-minute phases, then the
wait for its last window to close).
Each writes its JSON to benchmarks/results/ and prints a table.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("extract", "normalize", "sink", "state_latency", "full_sync", "sizing", "live")


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    status = 0
    for name in names:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
            return 2
        print(f"\n=== benchmark: {name} ===", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{name}")
        status |= int(module.main([]) or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
