"""Live-path benchmark: how long a CRM change takes to reach Genesys through the running daemon.

What runs is `make prod`'s supervisor (`deploy.supervise`: dagster-webserver + dagster-daemon over
PostgreSQL, the queued run coordinator) with the live sensor on (`sync_live_changes`, looking at
each 5-s loop of the daemon; `--interval` is `CRM_GENESYS_LIVE_INTERVAL_SECONDS`, its least
interval, 1 by default), against the emulator SERVER
through `GENESYS_BASE_URL`, exactly as a deployment talks to Genesys. The CRM is a demo CRM in
SQLite, loaded into Genesys by one window run before the clock starts.

Per rate (`--rates`, 5 and 100 changes/s), for `--seconds` (300): a committer updates one CRM
contact per change (its job title carries the change's sequence number, `modified_at` = now) at a
steady rate, in a transaction per 50 ms tick; an observer (its own OAuth token) looks each
observed change's key up by ExternalId in the emulator until the contact shows that version or a
newer one. Latency = the lookup's answer time - the commit's time. At high rates every k-th change
is observed (`--observe-per-s`, 10), so that the lookups do not load the machine; the table says
how many were. The latency resolution is the observer's round time (reported).

Afterwards: the supervisor is stopped, every window that holds a change is run once it has closed
(`defs.execution.run_window`, 15-minute windows: `--window`) and its accounting is checked
(`extracted = created + updated + deleted + unchanged + stale + quarantined + dead-lettered`; what
the live path sent costs it nothing: its writes should be 0), Genesys holds each key once (0
duplicates) and every changed contact shows its last committed version.

Windows only (no live path) cannot be measured here: an hourly window needs an hour. Their
latency is COMPUTED from the schedule: for changes committed steadily over a window of length W,
latency = (window end - commit) + the schedule's offset + the measured duration of a window run,
so p50 = W/2 + offset + d, p95 = 0.95 W + offset + d, max = W + offset + d; the output says so.

PostgreSQL: `CRM_GENESYS_TEST_POSTGRES_URL` when set, else a private server for the run.
The emulator's per-token limit is `--emulator-limit` (60,000/min: the observer's lookups need
room); the sync paces itself to `--budget` (300/min, the platform's default).

The emulator's identifier lookups lag its writes by uniform 0..`--lookup-lag-max-s` (5 s, the
`realistic` profile's lag: a screen pop reads that index), so the lag is part of the latency.
Per phase, `live_runs` says where each live run's time went (`STAGES`, from its run events, and
the step's own `extract_s`/`prepare_s`/`send_s`). `--latency-only` stops after the phases.

Usage: python -m benchmarks.bench_live [--seconds 300] [--rates 5 100] [--interval 1]
           [--budget 300] [--contacts 3000] [--window 15min] [--lookup-lag-max-s 5]
           [--latency-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_sink import CLIENT_ID, CLIENT_SECRET, Emulator
from benchmarks.bench_state_latency import fresh_database, postgres
from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys.genesys.client import GenesysClient
from crm_genesys.genesys.settings import GenesysSettings
from crm_genesys.settings import PARTITION_FORMAT, SETTINGS
from crm_genesys.sync.accounting import BUCKETS
from crm_genesys.sync.live import quantile
from deploy.services import free_port
from deploy.supervise import INSTANCE_CONFIG, REPO, WORKSPACE, dagster_url

RESULTS = Path(__file__).parent / "results" / "live.json"
WINDOWS = {"15min": timedelta(minutes=15), "hourly": timedelta(hours=1)}
OFFSETS = {"15min": timedelta(minutes=2), "hourly": timedelta(minutes=5)}  # schedule offsets
FOREIGN = ("GENESYS_", "CRM_", "SYNC_STATE", "DAGSTER_", "CELERY_")
TICK_S = 0.05
TITLE = "bench-"
STARTUP_DEADLINE_S = 300.0
DAEMON_HEALTH = """{ instance { daemonHealth { allDaemonStatuses {
    daemonType required healthy } } } }"""


def floor_to(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


def wait_for(predicate: Any, deadline_s: float, what: str, proc: subprocess.Popen[bytes]) -> Any:
    """`predicate()`'s first truthy value, polled until `deadline_s` (raises if `proc` died)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the supervisor exited ({proc.returncode}) before {what}")
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise RuntimeError(f"no {what} within {deadline_s:.0f} s")


def healthy(port: int) -> bool:
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/graphql", json={"query": DAEMON_HEALTH}, timeout=5
        )
    except httpx.TransportError:
        return False
    data = response.json().get("data") if response.status_code == 200 else None
    if not data:
        return False
    statuses = [s for s in data["instance"]["daemonHealth"]["allDaemonStatuses"] if s["required"]]
    return bool(statuses) and all(s["healthy"] for s in statuses)


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args}: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return done.stdout


# ----------------------------------------------------------------------------- the CRM side


@dataclass
class Change:
    seq: int
    key: str
    committed: float  # epoch seconds, just after the commit returned
    observed: bool
    seen: float | None = None


class Committer(threading.Thread):
    """Updates one CRM contact per change at `rate` per second for `seconds`, a transaction per
    tick; every change goes to `changes`, the observed ones also to `out`."""

    def __init__(
        self,
        crm: Path,
        keys: list[str],
        rate: float,
        seconds: float,
        first_seq: int,
        every: int,
        out: queue.Queue[Change],
    ) -> None:
        super().__init__(daemon=True)
        self.crm, self.keys, self.rate, self.seconds = crm, keys, rate, seconds
        self.seq, self.every, self.out = first_seq, every, out
        self.changes: list[Change] = []
        self.error: BaseException | None = None
        self.late_ticks = 0

    def run(self) -> None:
        try:
            self._commit_steadily()
        except BaseException as exc:  # reported by the phase
            self.error = exc

    def _commit_steadily(self) -> None:
        conn = sqlite3.connect(self.crm, timeout=30)
        total = int(self.rate * self.seconds)
        started = time.monotonic()
        done = 0
        while done < total:
            due = min(total, int(self.rate * (time.monotonic() - started)) + 1)
            batch = []
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            for _ in range(due - done):
                seq = self.seq
                self.seq += 1
                key = self.keys[seq % len(self.keys)]
                batch.append((f"{TITLE}{seq:09d}", stamp, key))
            with conn:
                conn.executemany(
                    "UPDATE contacts SET job_title = ?, modified_at = ? WHERE account_number = ?",
                    batch,
                )
            committed = time.time()
            for title, _, key in batch:
                seq = int(title[len(TITLE) :])
                change = Change(seq, key, committed, observed=seq % self.every == 0)
                self.changes.append(change)
                if change.observed:
                    self.out.put(change)
            done = due
            pause = started + done / self.rate - time.monotonic()
            if pause > 0:
                time.sleep(min(pause, TICK_S))
            elif pause < -1.0:
                self.late_ticks += 1
        conn.close()


def version_of(contact: dict[str, Any] | None) -> int:
    title = str((contact or {}).get("title") or "")
    return int(title[len(TITLE) :]) if title.startswith(TITLE) else -1


async def observe(
    url: str,
    source_id: str,
    inbox: queue.Queue[Change],
    committer: Committer,
    drain_s: float,
    per_minute: int,
) -> list[float]:
    """Look up the observed changes' keys until each shows its version; the round times."""
    settings = GenesysSettings.for_base_url(
        url, CLIENT_ID, CLIENT_SECRET, rate_limit_per_minute=per_minute, max_in_flight=16
    )
    pending: dict[str, list[Change]] = {}
    rounds: list[float] = []
    limit = asyncio.Semaphore(16)
    ended_at: float | None = None
    async with GenesysClient(settings) as client:

        async def look(key: str) -> None:
            async with limit:
                contact = await client.lookup_by_external_id(source_id, key)
            now = time.time()
            seen = version_of(contact)
            left = []
            for change in pending[key]:
                if change.seq <= seen:
                    change.seen = now
                else:
                    left.append(change)
            pending[key] = left

        while True:
            while not inbox.empty():
                change = inbox.get_nowait()
                pending.setdefault(change.key, []).append(change)
            for key in [k for k, v in pending.items() if not v]:
                del pending[key]
            if not committer.is_alive():
                ended_at = ended_at or time.monotonic()
                if not pending and inbox.empty():
                    break
                if time.monotonic() - ended_at > drain_s:
                    break
            started = time.monotonic()
            if pending:
                await asyncio.gather(*(look(k) for k in list(pending)))
                rounds.append(time.monotonic() - started)
            await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    return rounds


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        name: round(quantile(latencies, q), 2)
        for name, q in (("p50", 0.5), ("p95", 0.95), ("max", 1.0))
    }


def phase(
    crm: Path,
    keys: list[str],
    rate: float,
    seconds: float,
    first_seq: int,
    emulator: Emulator,
    source_id: str,
    args: argparse.Namespace,
) -> tuple[dict[str, Any], list[Change]]:
    every = max(1, round(rate / args.observe_per_s))
    inbox: queue.Queue[Change] = queue.Queue()
    committer = Committer(crm, keys, rate, seconds, first_seq, every, inbox)
    committer.start()
    rounds = asyncio.run(
        observe(emulator.url, source_id, inbox, committer, args.drain_s, args.emulator_limit)
    )
    committer.join()
    if committer.error is not None:
        raise committer.error
    observed = [c for c in committer.changes if c.observed]
    latencies = [c.seen - c.committed for c in observed if c.seen is not None]
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "changes": len(committer.changes),
        "observed": len(observed),
        "observed_every": every,
        "not_seen_within_drain": sum(1 for c in observed if c.seen is None),
        "latency_s": summary(latencies),
        "observer_round_s_median": round(quantile(rounds, 0.5), 3) if rounds else None,
        "committer_late_ticks": committer.late_ticks,
    }, committer.changes


# ----------------------------------------------------------------------------- after the run


def live_runs(instance: Any) -> dict[str, int]:
    import dagster as dg

    records = instance.get_run_records(dg.RunsFilter(job_name="live_sync_job"))
    return dict(Counter(r.dagster_run.status.value for r in records))


# Where a live run's time goes: (stage, the event that ends it, by its stored name); a stage
# starts where the previous one ended, the first at the range's end (the sensor's "now").
STAGES = (
    ("sensor_to_run", "PIPELINE_ENQUEUED"),
    ("queue_wait", "PIPELINE_DEQUEUED"),
    ("launch", "PIPELINE_STARTING"),
    ("process_start", "PIPELINE_START"),
    ("run_setup", "STEP_START"),
    ("sync", "ASSET_MATERIALIZATION"),
    ("teardown", "PIPELINE_SUCCESS"),
)


def live_timeline(instance: Any, since: float) -> dict[str, Any]:
    """Per stage of the live runs created after `since`, p50/p95/max seconds; with the runs'
    own metadata (rows, requests, latency to the sink) and the gaps between ranges."""
    import dagster as dg

    records = instance.get_run_records(dg.RunsFilter(job_name="live_sync_job"))
    stages: dict[str, list[float]] = {name: [] for name, _ in STAGES}
    meta: dict[str, list[float]] = {}
    widths: list[float] = []
    for record in records:
        if record.create_timestamp.timestamp() < since:
            continue
        run = record.dagster_run
        at: dict[str, float] = {}
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            at.setdefault(event.event_type_value, entry.timestamp)
            if event.event_type_value == "ASSET_MATERIALIZATION":
                for name, value in event.event_specific_data.materialization.metadata.items():
                    if isinstance(value.value, int | float):
                        meta.setdefault(name, []).append(float(value.value))
        start = datetime.fromisoformat(run.tags["crm_genesys/live_from"]).timestamp()
        previous = datetime.fromisoformat(run.tags["crm_genesys/live_to"]).timestamp()
        widths.append(previous - start)
        for name, event_type in STAGES:
            if event_type in at:
                stages[name].append(at[event_type] - previous)
                previous = at[event_type]

    def spread(values: list[float]) -> dict[str, float]:
        return summary(values) | {"n": len(values)} if values else {}

    return {
        "stages_s": {name: spread(values) for name, values in stages.items()},
        "range_width_s": spread(widths),
        "run_metadata": {
            name: spread(values)
            for name, values in meta.items()
            if name
            in {
                "extracted",
                "changes_sent",
                "requests",
                "latency_p95_s",
                "latency_max_s",
                "extract_s",
                "prepare_s",
                "send_s",
                "unchanged",
            }
        },
    }


def live_in_flight(instance: Any) -> int:
    from crm_genesys.defs.live import live_runs_in_flight

    return int(live_runs_in_flight(instance))


def run_windows(keys: list[str]) -> list[dict[str, Any]]:
    """Run each window of `keys` (closed) in this process; its accounting and duration."""
    from crm_genesys.defs.execution import failure_message, instance, run_window

    out = []
    with instance() as dagster_instance:
        for key in keys:
            started = time.perf_counter()
            result, counts = run_window(key, dagster_instance)
            seconds = time.perf_counter() - started
            identity = counts["extracted"] == sum(counts[b] for b in BUCKETS)
            out.append(
                {
                    "window": key,
                    "success": bool(result.success),
                    "seconds": round(seconds, 2),
                    "accounting_exact": identity,
                    **{k: v for k, v in counts.items() if k != "ok"},
                    **({} if result.success else {"failure": failure_message(result)}),
                }
            )
    return out


def windows_only(window: str, run_seconds: float) -> dict[str, Any]:
    length = WINDOWS[window].total_seconds()
    offset = OFFSETS[window].total_seconds()
    return {
        "window": window,
        "schedule_offset_s": offset,
        "window_run_s": round(run_seconds, 2),
        "latency_s": {
            "p50": round(length / 2 + offset + run_seconds, 1),
            "p95": round(0.95 * length + offset + run_seconds, 1),
            "max": round(length + offset + run_seconds, 1),
        },
        "computed": True,
    }


# ----------------------------------------------------------------------------- main


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            import psutil

            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_live")
    parser.add_argument("--seconds", type=float, default=300.0, help="commit phase per rate")
    parser.add_argument("--rates", type=float, nargs="+", default=[5.0, 100.0])
    parser.add_argument(
        "--interval",
        type=int,
        default=int(SETTINGS["CRM_GENESYS_LIVE_INTERVAL_SECONDS"].default),
        help="the live sensor's least interval (s)",
    )
    parser.add_argument("--budget", type=int, default=300, help="the sync's requests/minute")
    parser.add_argument("--emulator-limit", type=int, default=60_000, help="per token/minute")
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--window", choices=sorted(WINDOWS), default="15min")
    parser.add_argument("--observe-per-s", type=float, default=10.0)
    parser.add_argument("--drain-s", type=float, default=180.0)
    parser.add_argument(
        "--lookup-lag-max-s",
        type=float,
        default=5.0,
        help="the emulator's index lag behind identifier lookups, uniform 0..this (s)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="stop after the live phases (no windows, no parity check): a quick look",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    length = WINDOWS[args.window]
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp_dir:
        tmp = Path(tmp_dir)
        tmp.chmod(0o755)  # a private PostgreSQL may run as another user
        with postgres(tmp) as server_url:
            emulator = Emulator(tmp / "emulator", args.emulator_limit)
            try:
                lag = {"profile": "basic", "lag_max_s": args.lookup_lag_max_s}
                emulator.admin.put("/__emulator/settings", json={"realism": lag}).raise_for_status()
                out = run(args, tmp, server_url, emulator, length)
            finally:
                emulator.stop()
    out["seconds_total"] = round(time.perf_counter() - started, 1)
    out["command"] = "python -m benchmarks.bench_live " + " ".join(argv or sys.argv[1:])
    print_table(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    print(f"wrote {args.out} ({out['seconds_total']} s)")
    return 0


def run(
    args: argparse.Namespace, tmp: Path, server_url: str, emulator: Emulator, length: timedelta
) -> dict[str, Any]:
    now = datetime.now(UTC)
    first = floor_to(now, length) - length
    home, data = tmp / "prod" / "dagster_home", tmp / "prod" / "data"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(INSTANCE_CONFIG.read_text())
    crm = data / "demo_crm.sqlite"
    generate_demo_crm(crm, rows=args.contacts, seed=5, now=now, windows=1, window=length)
    with sqlite3.connect(crm) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # readers (sensor, runs) and the committer
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update(
        {
            "CRM_GENESYS_PROD_DIR": str(tmp / "prod"),
            "DAGSTER_HOME": str(home),
            "CRM_GENESYS_DATA_DIR": str(data),
            "DAGSTER_WEBSERVER_PORT": str(port),
            "DAGSTER_PG_URL": dagster_url(fresh_database(server_url)),
            "SYNC_STATE_URL": fresh_database(server_url),
            "CRM_GENESYS_WINDOW": args.window,
            "CRM_GENESYS_PARTITION_START": (first - length).strftime(PARTITION_FORMAT),
            "CRM_GENESYS_LIVE": "on",
            "CRM_GENESYS_LIVE_INTERVAL_SECONDS": str(args.interval),
            "GENESYS_BASE_URL": emulator.url,
            "GENESYS_CLIENT_ID": CLIENT_ID,
            "GENESYS_CLIENT_SECRET": CLIENT_SECRET,
            "GENESYS_RATE_LIMIT_PER_MINUTE": str(args.budget),
        }
    )
    os.environ.update(env)  # the window runs of this process (definitions read it at import)
    print("pushing the schema and loading the CRM's window ...", flush=True)
    cli(env, "-m", "crm_genesys.cli", "schema", "push")
    [initial] = run_windows([first.strftime(PARTITION_FORMAT)])
    if not initial["success"]:
        raise RuntimeError(f"the initial window failed: {initial}")
    # The windows are the benchmark's to run afterwards: the schedule does not run them now.
    cli(env, "-m", "dagster", "schedule", "stop", "sync_schedule", "-w", str(WORKSPACE))
    held = Counter(ext["value"] for c in emulator.contacts() for ext in c.get("externalIds") or [])
    source_id = next(
        ext["externalSource"]["id"] for c in emulator.contacts() for ext in c["externalIds"]
    )
    with sqlite3.connect(crm) as conn:
        once = {
            k
            for (k,) in conn.execute(
                "SELECT account_number FROM contacts GROUP BY account_number HAVING COUNT(*) = 1"
            )
        }
    keys = sorted(k for k in held if k in once)
    print(f"{len(keys)} contacts in Genesys to change; starting the deployment ...", flush=True)

    import dagster as dg
    from dagster._core.scheduler.instigation import InstigatorType

    log = (tmp / "supervisor.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.supervise"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    phases: list[dict[str, Any]] = []
    changes: list[Change] = []
    try:
        wait_for(lambda: healthy(port), STARTUP_DEADLINE_S, "healthy daemons", proc)
        with dg.DagsterInstance.from_config(str(home)) as instance:

            def cursor_set() -> bool:
                return any(
                    s.instigator_name == "sync_live_changes"
                    and getattr(s.instigator_data, "cursor", None)
                    for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
                )

            wait_for(cursor_set, STARTUP_DEADLINE_S, "the live sensor's first tick", proc)
            for rate in args.rates:
                print(f"committing {rate:g} changes/s for {args.seconds:g} s ...", flush=True)
                began = time.time()
                result, done = phase(
                    crm, keys, rate, args.seconds, len(changes), emulator, source_id, args
                )
                result["live_runs"] = live_timeline(instance, began)
                print(f"  {result}", flush=True)
                phases.append(result)
                changes.extend(done)
            wait_for(lambda: live_in_flight(instance) == 0, 300, "the last live run", proc)
            runs = live_runs(instance)
    except BaseException:
        tail = (tmp / "supervisor.log").read_text(errors="replace")[-4000:]
        print(f"the supervisor's last output:\n{tail}", file=sys.stderr)
        raise
    finally:
        stop(proc)
        log.close()

    # The measured part, kept should what follows fail.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".partial.json").write_text(
        json.dumps({"phases": phases, "live_runs": runs}, indent=2) + "\n"
    )
    if args.latency_only:
        raise SystemExit(f"latency only: {args.out.with_suffix('.partial.json')}")
    last = max(c.committed for c in changes)
    close = floor_to(datetime.fromtimestamp(last, UTC), length) + length
    wait = (close - datetime.now(UTC)).total_seconds() + 1
    if wait > 0:
        print(f"waiting {wait:.0f} s for the last window to close ...", flush=True)
        time.sleep(wait)
    span = floor_to(datetime.fromtimestamp(min(c.committed for c in changes), UTC), length)
    keys_run = []
    while span < close:
        keys_run.append(span.strftime(PARTITION_FORMAT))
        span += length
    print(f"running the windows {', '.join(keys_run)} ...", flush=True)
    windows = run_windows(keys_run)

    contacts = emulator.contacts()
    held = Counter(ext["value"] for c in contacts for ext in c.get("externalIds") or [])
    duplicates = sum(n - 1 for n in held.values() if n > 1)
    final = {ext["value"]: version_of(c) for c in contacts for ext in c.get("externalIds") or []}
    latest: dict[str, int] = {}
    for c in changes:
        latest[c.key] = max(latest.get(c.key, -1), c.seq)
    behind = sum(1 for k, seq in latest.items() if final.get(k) != seq)
    run_s = quantile([w["seconds"] for w in windows], 0.5)
    return {
        "benchmark": "live",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count() or 0},
        "budget_per_minute": args.budget,
        "live_interval_s": args.interval,
        "lookup_lag_max_s": args.lookup_lag_max_s,
        "contacts": len(keys),
        "initial_window": initial,
        "phases": phases,
        "live_runs": runs,
        "windows": windows,
        "duplicates": duplicates,
        "contacts_not_at_last_version": behind,
        "windows_only_computed": [windows_only(w, run_s) for w in ("hourly", args.window)],
        "targets": {
            "p95<=60s": all(p["latency_s"]["p95"] <= 60 for p in phases),
            "all_seen": all(p["not_seen_within_drain"] == 0 for p in phases),
            "duplicates==0": duplicates == 0,
            "windows_exact": all(w["success"] and w["accounting_exact"] for w in windows),
            "windows_sent_nothing": all(w["writes"] == 0 for w in windows),
            "parity": behind == 0,
        },
    }


def print_table(out: dict[str, Any]) -> None:
    print(
        f"\nlive path, budget {out['budget_per_minute']}/min, sensor every "
        f"{out['live_interval_s']} s, {out['contacts']} contacts"
    )
    head = f"{'path':<34}{'changes':>9}{'observed':>10}{'p50 s':>9}{'p95 s':>9}{'max s':>9}"
    print(head + "\n" + "-" * len(head))
    for p in out["phases"]:
        lat = p["latency_s"]
        print(
            f"{'live, ' + format(p['rate_per_s'], 'g') + ' changes/s (measured)':<34}"
            f"{p['changes']:>9}{p['observed']:>10}{lat['p50']:>9}{lat['p95']:>9}{lat['max']:>9}"
        )
    for w in out["windows_only_computed"]:
        lat = w["latency_s"]
        print(
            f"{'windows only, ' + w['window'] + ' (COMPUTED)':<34}{'':>9}{'':>10}"
            f"{lat['p50']:>9}{lat['p95']:>9}{lat['max']:>9}"
        )
    print(
        "windows only is computed from the schedule, not measured: window end + the schedule's "
        "offset + the measured duration of a window run "
        f"({out['windows_only_computed'][0]['window_run_s']} s), for changes spread evenly "
        "over a window"
    )
    for w in out["windows"]:
        print(
            f"window {w['window']}: extracted {w['extracted']}, writes {w['writes']}, "
            f"unchanged {w['unchanged']}, exact {w['accounting_exact']}, {w['seconds']} s"
            + (f", FAILED: {w['failure']}" if "failure" in w else "")
        )
    print(
        f"live runs: {out['live_runs']}; duplicates {out['duplicates']}; contacts not at "
        f"their last version {out['contacts_not_at_last_version']}"
    )
    print(
        "targets:", ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in out["targets"].items())
    )


if __name__ == "__main__":
    raise SystemExit(main())
