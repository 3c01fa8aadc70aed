"""State-latency benchmark: the sink keeps the rate budget busy when its sync state answers slowly.

The sink (`sync.sink.apply_changes` through `GenesysClient`) against the emulator SERVER, with
the sync state on PostgreSQL twice in the same run: once on a direct connection, once through
a TCP proxy that holds every chunk of bytes for half of `--round-trip-ms` (20) in each
direction, so that every round trip to the database costs 20 ms more (a database that answers
in 20 ms, as in another zone). The sink's
state reads and writes run in worker threads, so the requests in flight never wait for them;
the figure of merit is the share of the ceiling (what the paced budget allows for the work)
on the slow connection, beside the direct one. Target: >= 95 %.

Scenarios: `first_load` (creates only) and `mixed` (a third each of creates, merged updates and
deletes of contacts preloaded beforehand with the limit lifted), as in `bench_sink`.

PostgreSQL: `CRM_GENESYS_TEST_POSTGRES_URL` when set (a server whose user may CREATE DATABASE),
else a private server of Debian's `postgresql` started for the run (`deploy.services`).

Usage: python -m benchmarks.bench_state_latency [--budget 1200] [--seconds 30] [--round-trip-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.bench_sink import (
    BATCH,
    OUR_RATE_SHARE,
    PRELOAD_BUDGET,
    Emulator,
    ceiling,
    change_row,
    ensure_source,
    frame,
    in_flight_for,
    measure,
    preload,
    run_ours,
)
from crm_genesys.state.store import SyncStateStore
from deploy.services import POSTGRES_URL_ENV, LocalPostgres

RESULTS = Path(__file__).parent / "results" / "state_latency.json"
SCENARIOS = ("first_load", "mixed")


class LatencyProxy:
    """A TCP proxy on 127.0.0.1 that delivers every chunk it reads `delay` seconds later, in
    order, in both directions: each round trip through it costs 2 × `delay` more, and its
    throughput is not limited (chunks in flight overlap)."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the latency proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _shutdown(self) -> None:
        """Cancel the connections still piped (pooled ones the engines did not close)."""
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _connection(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        for w in (client_w, server_w):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w),
                self._pipe(server_r, client_w),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            # Ended, not cancelled: asyncio's stream callback (3.11) raises on a cancelled task.
            for w in (client_w, server_w):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                chunk = await reader.read(65536)
                queue.put_nowait((loop.time() + self.delay, chunk))
                if not chunk:
                    break
            await delivering
        except (ConnectionError, OSError):
            delivering.cancel()
            writer.close()


@contextmanager
def postgres(tmp: Path) -> Iterator[str]:
    """A SQLAlchemy URL of a server where databases may be created."""
    given = os.environ.get(POSTGRES_URL_ENV)
    if given:
        yield given
        return
    server = LocalPostgres(tmp / "pg", durable=True).start()
    try:
        yield server.url()
    finally:
        server.stop()


def fresh_database(server_url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def via(url: str, port: int) -> str:
    return sa.make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def round_trip_ms(url: str, n: int = 20) -> float:
    """The median time of `SELECT 1` on one open connection."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    times = []
    with engine.connect() as conn:
        for _ in range(n):
            started = time.perf_counter()
            conn.exec_driver_sql("SELECT 1").scalar()
            times.append((time.perf_counter() - started) * 1000)
    engine.dispose()
    return sorted(times)[n // 2]


def one_run(
    name: str, emulator: Emulator, state_url: str, budget: int, n: int, connection: str
) -> dict[str, Any]:
    """`name` with the state at `state_url` (a fresh database); its measure."""
    store = SyncStateStore(state_url)
    store.create_all()
    emulator.reset(data=True)
    keys = [f"AC-{i:07d}" for i in range(n)]
    if name == "mixed":
        emulator.rate_limit(PRELOAD_BUDGET)
        ids = asyncio.run(preload(emulator, store, keys[n // 3 :]))
        emulator.rate_limit(budget)
        rows = []
        for i, key in enumerate(keys):
            op = "create" if i < n // 3 else "update" if i < 2 * n // 3 else "delete"
            rows.append(change_row(key, op, 2, ids.get(key)))
    else:
        rows = [change_row(k, "create", 1, None) for k in keys]
    ops = Counter(r["op"] for r in rows)
    asyncio.run(ensure_source(emulator))
    emulator.reset(data=False)
    in_flight = in_flight_for(budget, 0.0)
    span = [0.0, 0.0]
    seconds, failed = asyncio.run(run_ours(emulator, store, frame(rows), budget, in_flight, span))
    counts = emulator.log_counts()
    top = ceiling(ops, counts[3]["fetch"] > 0, budget * OUR_RATE_SHARE)
    spans = ((span[0], span[1]), emulator.write_span())
    result = measure(n, seconds, counts, failed, budget, ops, top, spans)
    store.dispose()
    return {"scenario": name, "connection": connection, **asdict(result)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_state_latency")
    parser.add_argument("--budget", type=int, default=1200, help="requests per minute")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    parser.add_argument(
        "--round-trip-ms", type=float, default=20.0, help="added to each database round trip"
    )
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    contacts = int(args.budget / 60.0 * BATCH * args.seconds)
    with tempfile.TemporaryDirectory(prefix="bench-state-latency-") as tmp_dir:
        tmp = Path(tmp_dir)
        tmp.chmod(0o755)  # a private PostgreSQL may run as another user
        with postgres(tmp) as server_url:
            where = sa.make_url(server_url)
            target = (where.host or "127.0.0.1", int(where.port or 5432))
            emulator = Emulator(tmp, args.budget)
            try:
                with LatencyProxy(target, args.round_trip_ms / 2000.0) as proxy:
                    probe = fresh_database(server_url)
                    rtt = {
                        "direct": round(round_trip_ms(probe), 2),
                        "slow": round(round_trip_ms(via(probe, proxy.port)), 2),
                    }
                    print(f"round trip: direct {rtt['direct']} ms, slow {rtt['slow']} ms")
                    for name in args.scenarios:
                        for connection in ("direct", "slow"):
                            print(f"running {name} on the {connection} connection ...", flush=True)
                            url = fresh_database(server_url)
                            if connection == "slow":
                                url = via(url, proxy.port)
                            results.append(
                                one_run(name, emulator, url, args.budget, contacts, connection)
                            )
            finally:
                emulator.stop()
    print(f"budget {args.budget}/min, {BATCH} per request, {contacts} changes per run")
    head = (
        f"{'scenario':<12}{'connection':<12}{'contacts/s':>12}{'of ceiling':>12}{'steady':>8}"
        f"{'429s':>6}{'setup s':>9}{'tail s':>8}"
    )
    print(head + "\n" + "-" * len(head))
    for r in results:
        print(
            f"{r['scenario']:<12}{r['connection']:<12}{r['contacts_per_s']:>12.1f}"
            f"{100 * r['share_of_ceiling']:>11.1f}%{100 * r['steady_request_share']:>7.1f}%"
            f"{r['rate_limited']:>6}{r['setup_s']:>9.2f}{r['tail_s']:>8.2f}"
        )
    slow = [r for r in results if r["connection"] == "slow"]
    # The slow run against the direct one of the same scenario: what the distance costs,
    # whatever else the machine is doing.
    direct = {r["scenario"]: r for r in results if r["connection"] == "direct"}
    ratios = {
        r["scenario"]: round(r["share_of_ceiling"] / direct[r["scenario"]]["share_of_ceiling"], 3)
        for r in slow
        if r["scenario"] in direct and direct[r["scenario"]]["share_of_ceiling"]
    }
    print("slow / direct:", ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    targets = {
        "slow_share_of_ceiling>=0.95": all(r["share_of_ceiling"] >= 0.95 for r in slow),
        "slow_over_direct>=0.95": all(v >= 0.95 for v in ratios.values()),
    }
    print("targets:", ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    out = {
        "benchmark": "state_latency",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.bench_state_latency " + " ".join(argv or sys.argv[1:]),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count() or 0},
        "budget_per_minute": args.budget,
        "batch_size": BATCH,
        "added_round_trip_ms": args.round_trip_ms,
        "round_trip_ms": rtt,
        "runs": results,
        "slow_over_direct": ratios,
        "targets": targets,
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} ({out['seconds_total']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
