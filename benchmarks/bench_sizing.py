"""Sizing: how long a first load and a day of windows take for N contacts at a rate budget and a
batch size, measured on the emulator server at a scaled budget and extrapolated.

What runs is the real window job (`crm_genesys.defs.execution.run_window`: extract, normalize,
diff, sink) on a demo CRM, against the emulator SERVER (a subprocess, bulk requests of at most
100 entities) through `GENESYS_BASE_URL`, exactly as a deployment talks to Genesys.

Measured (counts from the emulator's request log, rates as ratios — the machine is shared):
1. First load: one window holding `--rows` demo contacts, all new. Requests per batch by
   operation, and the **share of the ceiling**: the sink's steady write rate (requests/s between
   the 10th and 90th percentile of the writes) over the paced budget (`budget × rate_share / 60`,
   the most the sync lets itself send).
2. Windows: `--windows` hourly windows of CRM activity (updates, deletes, creates, re-indexes):
   requests per batch of each operation (an update batch costs a fetch and an update: the
   update merges into what Genesys holds), the fixed requests of a window run (External Source
   and schema lookups), and each run's wall time in this process (extract, normalize, Dagster's
   in-process overhead).
3. Validation: a first load at another budget (`--check-budget`, 300 by default) whose measured
   time is compared with what the model predicts from (1) alone.

The model, for N contacts, budget B requests/minute, batch size 100, rate share s (0.8), and the
measured share of the ceiling c:
- first load: requests = ceil(N / 100) × (requests per add batch) + fixed requests;
  time = requests ÷ (B × s / 60 × c)
- a day of windows: each of 24 hourly windows carries `daily_change_share × N / 24` changes,
  split updates / creates / deletes by `--mix`; requests per window = Σ ceil(changes_op / 100) ×
  (requests per batch of op) + fixed; Genesys time = 24 × requests ÷ (B × s / 60 × c); the share
  of the day's budget is 24 × requests ÷ (B × 1440). Local time per window (the measured median
  run time outside the sink) is reported apart: it depends on the machine, not on the budget.

Usage: python -m benchmarks.bench_sizing [--budget 1200] [--rows 32000] [--windows 6]
           [--daily-change-share 0.02] [--mix 0.75,0.15,0.10] [--check-budget 300]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.bench_sink import BATCH, CLIENT_ID, CLIENT_SECRET, OUR_RATE_SHARE, Emulator

RESULTS = Path(__file__).parent / "results" / "sizing.json"
HOUR = timedelta(hours=1)
SIZES = (100_000, 1_000_000, 10_000_000)
BUDGETS = (300, 1_200)
OPS = ("create", "update", "delete")
# The request operations (bench_sink's names) that serve each change operation.
SERVES = {"create": ("add",), "update": ("fetch", "update"), "delete": ("remove",)}


@dataclass
class Phase:
    """What one run of the window job cost and did."""

    window: str
    seconds: float
    sink_seconds: float
    requests: dict[str, int]
    changes: dict[str, int]
    steady_share: float


def _format(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d-%H:%M")


class Bench:
    """One emulator server, one demo CRM, one sync state, one Dagster instance."""

    def __init__(self, root: Path, budget: int) -> None:
        self.root = root
        self.budget = budget
        self.emulator = Emulator(root / "emulator", budget)
        self.crm = root / "demo_crm.sqlite"
        self.env = {
            "GENESYS_BASE_URL": self.emulator.url,
            "GENESYS_CLIENT_ID": CLIENT_ID,
            "GENESYS_CLIENT_SECRET": CLIENT_SECRET,
            "GENESYS_RATE_LIMIT_PER_MINUTE": str(budget),
            "GENESYS_BATCH_SIZE": str(BATCH),
            "CRM_DATABASE_URL": f"sqlite:///{self.crm}",
            "SYNC_STATE_URL": f"sqlite:///{root / 'sync_state.sqlite'}",
            "CRM_GENESYS_DATA_DIR": str(root / "data"),
        }

    def definitions(self) -> Any:
        from crm_genesys.definitions import make_definitions
        from crm_genesys.defs.resources import CrmResource, GenesysResource, SyncStateResource

        os.environ.update(self.env)  # the client id and secret are EnvVar fields
        return make_definitions(
            {
                "crm": CrmResource.from_env(),
                "genesys": GenesysResource.from_env(),
                "state": SyncStateResource.from_env(),
            }
        )

    def push_schema(self) -> None:
        from crm_genesys.cli import main as cli

        os.environ.update(self.env)
        if cli(["schema", "push"]) != 0:
            raise RuntimeError("schema push failed")

    def run(self, instance: Any, definitions: Any, window: str) -> Phase:
        from crm_genesys.defs.execution import failure_message, run_window

        self.emulator.reset(data=False)
        started = time.perf_counter()
        result, counts = run_window(window, instance, definitions)
        seconds = time.perf_counter() - started
        if not result.success:
            raise RuntimeError(f"window {window} failed: {failure_message(result)}")
        [event] = result.asset_materializations_for_node("genesys_sync")
        sink_seconds = float(event.metadata["sink/duration_s"].value)  # type: ignore[arg-type]
        _, _, steady, by_op = self.emulator.log_counts()
        return Phase(
            window=window,
            seconds=round(seconds, 2),
            sink_seconds=round(sink_seconds, 2),
            requests=dict(by_op),
            changes={op: counts[f"{op}d"] for op in OPS},
            steady_share=round(steady / (self.budget * OUR_RATE_SHARE / 60.0), 4),
        )

    def stop(self) -> None:
        self.emulator.stop()


def per_batch(phases: list[Phase]) -> dict[str, float]:
    """Requests per batch of each change operation, over `phases`."""
    out = {}
    for op in OPS:
        batches = sum(math.ceil(p.changes[op] / BATCH) for p in phases)
        requests = sum(p.requests.get(r, 0) for p in phases for r in SERVES[op])
        out[op] = round(requests / batches, 3) if batches else float(len(SERVES[op]))
    return out


def fixed_per_run(phases: list[Phase]) -> float:
    """Requests of a run that serve no change operation (lookups of source and schema, ...)."""
    served = {r for rs in SERVES.values() for r in rs}
    return statistics.mean(
        sum(n for op, n in p.requests.items() if op not in served) for p in phases
    )


def first_load_seconds(
    n: int, budget: int, add_per_batch: float, fixed: float, share: float
) -> float:
    requests = math.ceil(n / BATCH) * add_per_batch + fixed
    return requests / (budget * OUR_RATE_SHARE / 60.0 * share)


def day_requests(
    n: int, change_share: float, mix: dict[str, float], batch_cost: dict[str, float], fixed: float
) -> float:
    per_window = change_share * n / 24.0
    window = sum(math.ceil(per_window * mix[op] / BATCH) * batch_cost[op] for op in OPS) + fixed
    return 24.0 * window


def _human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_sizing")
    parser.add_argument("--budget", type=int, default=1200, help="requests/minute measured at")
    parser.add_argument("--rows", type=int, default=32_000, help="demo rows of the first load")
    parser.add_argument("--windows", type=int, default=6, help="hourly windows of activity")
    parser.add_argument("--updates", type=int, default=1500, help="per activity window")
    parser.add_argument("--creates", type=int, default=300, help="per activity window")
    parser.add_argument("--deletes", type=int, default=200, help="per activity window")
    parser.add_argument("--reindex", type=int, default=200, help="per activity window")
    parser.add_argument("--daily-change-share", type=float, default=0.02)
    parser.add_argument("--mix", default="0.75,0.15,0.10", help="updates,creates,deletes")
    parser.add_argument("--check-budget", type=int, default=300)
    parser.add_argument("--check-rows", type=int, default=8_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    shares = [float(x) for x in args.mix.split(",")]
    mix = {"update": shares[0], "create": shares[1], "delete": shares[2]}

    # Complete windows only: the first load's window, then one per round of activity, ending at
    # the current hour; the partitions start two hours before the first.
    top = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    base = top - args.windows * HOUR
    os.environ["CRM_GENESYS_WINDOW"] = "hourly"
    os.environ["CRM_GENESYS_PARTITION_START"] = _format(base - 3 * HOUR)
    import dagster as dg

    from crm_genesys.crm.demo import generate_demo_crm
    from crm_genesys.crm.simulate import simulate_activity

    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-sizing-") as tmp_dir:
        tmp = Path(tmp_dir)
        # --- validation run: a first load at the check budget, predicted from the main run
        print(f"first load of {args.check_rows} rows at {args.check_budget}/min ...", flush=True)
        check = Bench(tmp / "check", args.check_budget)
        try:
            generate_demo_crm(check.crm, rows=args.check_rows, seed=5, now=base - HOUR,
                              windows=1, window=HOUR)  # fmt: skip
            check.push_schema()
            with dg.instance_for_test() as instance:
                check_phase = check.run(instance, check.definitions(), _format(base - 2 * HOUR))
        finally:
            check.stop()

        # --- the main run at the measuring budget
        bench = Bench(tmp / "main", args.budget)
        try:
            generate_demo_crm(bench.crm, rows=args.rows, seed=7, now=base, windows=1, window=HOUR)
            bench.push_schema()
            definitions = bench.definitions()
            with dg.instance_for_test() as instance:
                print(f"first load of {args.rows} rows at {args.budget}/min ...", flush=True)
                load = bench.run(instance, definitions, _format(base - HOUR))
                activity: list[Phase] = []
                for i in range(args.windows):
                    window_start = base + i * HOUR
                    simulate_activity(
                        bench.crm,
                        now=window_start + HOUR / 2,
                        seed=100 + i,
                        updates=args.updates,
                        deletes=args.deletes,
                        reindex=args.reindex,
                        creates=args.creates,
                    )
                    print(f"activity window {i + 1}/{args.windows} ...", flush=True)
                    activity.append(bench.run(instance, definitions, _format(window_start)))
                held = len(bench.emulator.contacts())
        finally:
            bench.stop()
    load_after = os.getloadavg()

    expected_held = load.changes["create"] + sum(
        p.changes["create"] - p.changes["delete"] for p in activity
    )
    if held != expected_held:
        raise RuntimeError(f"the emulator holds {held} contacts, expected {expected_held}")
    share = load.steady_share
    cost = per_batch([load, *activity])
    fixed = fixed_per_run([load, *activity])
    local = statistics.median(p.seconds - p.sink_seconds for p in activity)
    predicted = first_load_seconds(
        check_phase.changes["create"], args.check_budget, cost["create"], fixed, share
    )

    rows = []
    for n in SIZES:
        row: dict[str, Any] = {"contacts": n}
        for budget in BUDGETS:
            day = day_requests(n, args.daily_change_share, mix, cost, fixed)
            row[f"first_load_s@{budget}"] = round(
                first_load_seconds(n, budget, cost["create"], fixed, share), 1
            )
            row[f"day_requests@{budget}"] = round(day)
            row[f"day_genesys_s@{budget}"] = round(
                day / (budget * OUR_RATE_SHARE / 60.0 * share), 1
            )
            row[f"day_budget_share@{budget}"] = round(day / (budget * 1440.0), 4)
        rows.append(row)

    print(f"\nmeasured at {args.budget}/min (paced to {OUR_RATE_SHARE:.0%}), batch {BATCH}")
    print(f"  first load: {load.changes['create']} creates, {load.requests} requests, "
          f"sink {load.sink_seconds} s, share of the ceiling {share:.1%}")  # fmt: skip
    print(f"  requests per batch: {cost}; fixed per run: {fixed:.1f}")
    print(f"  activity windows: median local time per run {local:.1f} s (outside the sink)")
    print(f"  check at {args.check_budget}/min: {check_phase.changes['create']} creates in "
          f"{check_phase.sink_seconds} s, model predicted {predicted:.1f} s "
          f"(share of its ceiling {check_phase.steady_share:.1%})")  # fmt: skip
    print(f"  load average (1/5/15 min) before {load_before}, after {load_after}")
    header = f"{'contacts':>12}" + "".join(
        f"{'first load @' + str(b):>18}{'day @' + str(b):>14}{'of budget':>11}" for b in BUDGETS
    )
    print(f"\n{header}")
    for row in rows:
        line = f"{row['contacts']:>12,}"
        for b in BUDGETS:
            line += f"{_human(row[f'first_load_s@{b}']):>18}"
            line += f"{_human(row[f'day_genesys_s@{b}']):>14}"
            line += f"{row[f'day_budget_share@{b}']:>11.2%}"
        print(line)

    out = {
        "benchmark": "sizing",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.bench_sizing " + " ".join(argv or sys.argv[1:]),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count() or 0},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "budget_per_minute": args.budget,
        "rate_share": OUR_RATE_SHARE,
        "batch_size": BATCH,
        "first_load": asdict(load),
        "activity_windows": [asdict(p) for p in activity],
        "check": {
            **asdict(check_phase),
            "budget_per_minute": args.check_budget,
            "predicted_sink_seconds": round(predicted, 2),
            "measured_over_predicted": round(check_phase.sink_seconds / predicted, 3),
        },
        "model": {
            "share_of_ceiling": share,
            "requests_per_batch": cost,
            "fixed_requests_per_run": round(fixed, 2),
            "local_seconds_per_window_run": round(local, 2),
            "daily_change_share": args.daily_change_share,
            "mix": mix,
        },
        "table": rows,
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} ({out['seconds_total']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
