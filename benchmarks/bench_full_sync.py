"""Full-sync benchmark: `crm-genesys full-sync` (the Dagster job, in its own process, on a
persistent instance) of a large demo CRM into the emulator SERVER, against the theoretical
sending time of the rate budget.

The budget is scaled so that T = contacts / (budget per second × batch size) is about
`--target-seconds` (five minutes), with `contacts` estimated as 96 % of the rows (what a demo CRM
holds to send: quarantined rows, tombstones and older versions send nothing). The budget in T is
the sync's own: `GENESYS_RATE_SHARE` (0.8, the default a deployment runs with) of the emulator's
rate limit, since the client never paces above that share. After the run T is computed again
from what was really sent (bulk requests and lookups ÷ the sync's budget per second), and that
is the T the wall time is judged against: wall ≤ 1.1 × T + 30 s. The budget never exceeds
`HEADROOM` of the emulator's measured capacity, so on a machine where the emulator cannot take
five minutes' worth, T is longer than five minutes (the figures say so: `budget_for_5_min`).

Measured: wall time of the child process (start to exit: Python start-up, Dagster, the CRM reads,
normalization, every request), peak RSS of the child and its descendants (sampled every 0.2 s;
the emulator is not among them), the accounting the run reports, the emulator's contact count,
and the emulator's own capacity: bulk adds of real contacts of the same CRM with no budget
limit, on the emulator as the run left it (holding every contact), so that it is known not to be
the bottleneck. The machine's load average is recorded beside the figures.

Usage: python -m benchmarks.bench_full_sync [--rows 1000000] [--crm PATH] [--target-seconds 300]
[--dry-run] (the CRM is generated at PATH once, over two years of modifications, and reused).
`--dry-run` measures `full-sync --dry-run`: every chunk read, normalized, diffed and its keys
marked in the state, nothing sent — the local pipeline's wall time and memory on their own, for
tables too large to send through the emulator in a short run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.bench_sink import Emulator
from crm_genesys import settings
from crm_genesys.contacts.mapping import load_mapping
from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys.crm.source import SqlCrmSource

RESULTS = Path(__file__).parent / "results" / "full_sync.json"
REPO = Path(__file__).resolve().parents[1]
BATCH = 100
SEND_SHARE = 0.96
# The share of the rate limit the sync paces to (`GENESYS_RATE_SHARE`, its default).
RATE_SHARE = 0.8
# The budget stays under this share of the emulator's measured ceiling.
HEADROOM = 0.7
CLIENT_ID = "demo-client"
CLIENT_SECRET = "demo-secret"  # the emulator's documented demo credential


@dataclass
class Figures:
    rows: int
    budget_per_minute: int
    rate_share: float
    sync_budget_per_minute: float
    batch: int
    requests: int
    writes: int
    theoretical_s: float
    wall_s: float
    target_s: float
    wall_ok: bool
    peak_rss_mib: float
    rss_ok: bool
    emulator_contacts: int
    emulator_capacity_contacts_per_s: float
    emulator_capacity_before_after: tuple[float, float]
    needed_contacts_per_s: float
    budget_for_5_min: int
    accounted: bool
    exit_status: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def tree_rss_kib(pid: int) -> int:
    """Resident memory of `pid` and all its descendants (KiB), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def ensure_crm(path: Path, rows: int) -> None:
    """The demo CRM of `rows` rows modified over two years (generated once, then reused)."""
    if path.exists():
        with SqlCrmSource(f"sqlite:///{path}", "contacts", "modified_at") as source:
            if source.count() == rows:
                return
    print(f"generating a {rows:,}-row demo CRM at {path} ...", flush=True)
    generate_demo_crm(
        path, rows=rows, seed=7, now=datetime.now(UTC), windows=730, window=timedelta(days=1)
    )


async def capacity(
    url: str, crm: Path, contacts: int = 20_000, prefix: str = "CAP-", in_flight: int = 16
) -> tuple[float, int]:
    """Contacts per second the emulator server accepts in bulk adds with no budget limit (real
    contacts of `crm`, `in_flight` requests at once: the sync's own `max_in_flight` default):
    its own ceiling."""
    from crm_genesys.contacts.normalize import normalize
    from crm_genesys.genesys.client import GenesysClient
    from crm_genesys.genesys.settings import GenesysSettings
    from crm_genesys.sync.window import contact_schema_ref

    mapping = load_mapping(settings.DEMO_MAPPING)
    with SqlCrmSource(f"sqlite:///{crm}", "contacts", "modified_at") as source:
        frame = next(source.extract_all(contacts * 11 // 10))
    live = normalize(frame[mapping.source_columns()], mapping).contacts
    live = live[~live["is_deleted"]].head(contacts)
    config = GenesysSettings.for_base_url(
        url, CLIENT_ID, CLIENT_SECRET, rate_limit_per_minute=10_000_000, max_in_flight=in_flight
    )
    async with GenesysClient(config) as client:
        source_id = await client.ensure_external_source("capacity probe")
        schema = await contact_schema_ref(client, mapping, push_if_missing=False)
        bodies = []
        for key, payload in zip(live["business_key"], live["payload"], strict=True):
            body = json.loads(payload)
            body["externalIds"] = [{"externalSource": {"id": source_id}, "value": f"{prefix}{key}"}]
            if "customFields" in body and schema:
                body["schema"] = schema
            bodies.append(body)
        batches = [bodies[i : i + BATCH] for i in range(0, len(bodies), BATCH)]
        slots = asyncio.Semaphore(in_flight)

        async def send(batch: list[dict[str, Any]]) -> None:
            async with slots:
                await client.bulk_add(batch)

        started = time.monotonic()
        await asyncio.gather(*(send(b) for b in batches))
        return len(bodies) / (time.monotonic() - started), len(bodies)


def run(
    rows: int, crm: Path, target_seconds: float, keep: bool, budget: int, dry_run: bool = False
) -> Figures:
    ensure_crm(crm, rows)
    wanted = max(1, math.ceil(rows * SEND_SHARE / (target_seconds * BATCH * RATE_SHARE) * 60))
    root = Path(tempfile.mkdtemp(prefix="bench-full-sync-"))
    emulator = Emulator(root / "emulator", 10_000_000)
    try:
        # The schema first (as an operator would), then the emulator's ceiling on this machine
        # now: the budget must stay well under it, or the emulator would be what is measured.
        env0 = {**os.environ, "GENESYS_BASE_URL": emulator.url, "GENESYS_CLIENT_ID": CLIENT_ID,
                "GENESYS_CLIENT_SECRET": CLIENT_SECRET}  # fmt: skip
        subprocess.run([sys.executable, "-m", "crm_genesys.cli", "schema", "push"], cwd=REPO,
                       env=env0, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        cap_before, probed = asyncio.run(capacity(emulator.url, crm, prefix="CAP0-"))
        ceiling = int(cap_before * HEADROOM / BATCH * 60 / RATE_SHARE)
        budget = budget or min(wanted, ceiling)
        print(
            f"emulator capacity {cap_before:,.0f} contacts/s; budget {budget}/min, the sync "
            f"paces to {RATE_SHARE:.0%} of it (T = {target_seconds:,.0f} s would need "
            f"{wanted}/min)",
            flush=True,
        )
        emulator.rate_limit(budget)
        home = root / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GENESYS_", "CRM_", "SYNC_STATE", "DAGSTER_"))
        }
        env.update(
            {
                "DAGSTER_HOME": str(home),
                "CRM_GENESYS_DATA_DIR": str(root / "data"),
                "CRM_DATABASE_URL": f"sqlite:///{crm}",
                "GENESYS_BASE_URL": emulator.url,
                "GENESYS_CLIENT_ID": CLIENT_ID,
                "GENESYS_CLIENT_SECRET": CLIENT_SECRET,
                "GENESYS_RATE_LIMIT_PER_MINUTE": str(budget),
                "GENESYS_RATE_SHARE": str(RATE_SHARE),
                "GENESYS_BATCH_SIZE": str(BATCH),
            }
        )
        cli = [sys.executable, "-m", "crm_genesys.cli"]
        log = root / "full_sync.log"
        print(f"full sync of {rows:,} rows at {budget}/min; log: {log}", flush=True)
        load_before = os.getloadavg()
        started = time.monotonic()
        with open(log, "w") as out:
            args = ["full-sync", "--dry-run"] if dry_run else ["full-sync"]
            child = subprocess.Popen([*cli, *args], cwd=REPO, env=env, stdout=out,
                                     stderr=subprocess.STDOUT)  # fmt: skip
            peak, shown = 0, started
            while child.poll() is None:
                peak = max(peak, tree_rss_kib(child.pid))
                time.sleep(0.2)
                if time.monotonic() - shown >= 60:
                    shown = time.monotonic()
                    print(
                        f"  {shown - started:,.0f} s: peak RSS so far {peak / 1024:,.0f} MiB, "
                        f"load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
        wall = time.monotonic() - started
        load_after = os.getloadavg()
        summary = parse_summary(log.read_text())
        if dry_run:  # the reading, normalizing, diffing and marking alone: nothing is sent
            summary["accounted"] = str(child.returncode == 0)
        requests = int(summary.get("requests", 0))
        writes = int(summary.get("writes", 0))
        theoretical = requests / (budget * RATE_SHARE / 60)
        stats = emulator.admin.get("/__emulator/stats").json()
        held = int(stats.get("contacts") or 0) - probed
        cap_after = asyncio.run(capacity(emulator.url, crm, prefix="CAP1-"))[0]
        cap = min(cap_before, cap_after)
        target = 1.1 * theoretical + 30
        peak_mib = peak / 1024
        return Figures(
            rows=rows,
            budget_per_minute=budget,
            rate_share=RATE_SHARE,
            sync_budget_per_minute=round(budget * RATE_SHARE, 1),
            batch=BATCH,
            requests=requests,
            writes=writes,
            theoretical_s=round(theoretical, 1),
            wall_s=round(wall, 1),
            target_s=round(target, 1),
            wall_ok=wall <= target,
            peak_rss_mib=round(peak_mib, 1),
            rss_ok=peak_mib <= 1536,
            emulator_contacts=held,
            emulator_capacity_contacts_per_s=round(cap, 1),
            emulator_capacity_before_after=(round(cap_before, 1), round(cap_after, 1)),
            needed_contacts_per_s=round(budget * RATE_SHARE / 60 * BATCH, 1),
            budget_for_5_min=wanted,
            accounted=str(summary.get("accounted")) == "True",
            exit_status=child.returncode,
            load_before=load_before,
            load_after=load_after,
        )
    finally:
        emulator.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def parse_summary(text: str) -> dict[str, str]:
    """The `key  value` lines the command prints at the end."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and not line.startswith(("20", " ")) and "-" not in parts[0][:1]:
            out[parts[0]] = parts[1].strip()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--crm", default="", help="where the demo CRM is (generated if absent)")
    parser.add_argument("--target-seconds", type=float, default=300.0)
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    parser.add_argument("--budget", type=int, default=0, help="requests/min (0: derived)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="measure `full-sync --dry-run` (every chunk read, normalized, diffed; nothing sent)",
    )
    args = parser.parse_args(argv)
    crm = Path(args.crm) if args.crm else Path(tempfile.gettempdir()) / f"crm-{args.rows}.sqlite"
    figures = run(args.rows, crm, args.target_seconds, args.keep, args.budget, args.dry_run)
    print(json.dumps(asdict(figures), indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[f"{args.rows}{' dry run' if args.dry_run else ''}"] = {
        **asdict(figures),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    if args.dry_run:
        return 0 if figures.rss_ok and figures.exit_status == 0 else 1
    return 0 if figures.wall_ok and figures.rss_ok and figures.exit_status == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
