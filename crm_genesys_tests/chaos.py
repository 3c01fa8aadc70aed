"""A seeded chaos run: many windows of CRM change synced against the realistic emulator server
with a fault profile, foreign writers between windows, and processes SIGKILLed at random points.

Two modes drive the same scenario:
- `prod` (the long run): `make prod`'s deployment (`prod_deployment`: dagster-webserver and
  dagster-daemon over PostgreSQL). Each window is launched through the webserver into the run
  queue; run workers (with their step workers) and the daemon are SIGKILLed at random points;
  run monitoring fails the dead runs and `retry_failed_windows` re-runs their windows. At the
  end a full sync (whose mirror removes the CRM's hard deletes) is launched, killed once, and
  launched again to its end; the cutover windows it hands over run too.
- `cli` (the short run in `make test`): `crm-genesys sync --window` processes, SIGKILLed and
  re-run by the harness, and a full sync from the command line at the end.

`run_chaos(root, ChaosConfig(...)) -> ChaosResult` replays exactly from its seed (the CRM, its
activity, the kill points and the foreign edits; the emulator's faults are seeded too, but what
they hit depends on timing). At the end Genesys is compared with `oracle.expected_contacts` (the
reading of the CRM that shares no code with the normalizer) field by field, the on-disk scan
(`disk_scan.scan_deployment`) runs, and `ChaosResult.table()` prints the figures.

`python -m crm_genesys_tests.chaos --contacts N --windows W --kills K --seed S` (`make chaos`).
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from crm_genesys.crm.demo import generate_demo_crm
from crm_genesys.crm.simulate import next_window_now, simulate_activity
from crm_genesys.emulator.foreign import ForeignEdit
from crm_genesys.settings import DEMO_MAPPING
from crm_genesys_tests.cli_deployment import Deployment, start_deployment
from crm_genesys_tests.disk_scan import (
    DiskReport,
    contact_values_of,
    genesys_values,
    scan_deployment,
)
from crm_genesys_tests.oracle import expected_contacts
from crm_genesys_tests.prod_deployment import ProdDeployment, start_prod_deployment

HOUR = timedelta(hours=1)
FOREIGN_KINDS = ["surveyOptOut", "externalSystemUrl", "twitterId", "externalId", "identifier"]


@dataclass(frozen=True)
class ChaosConfig:
    seed: int = 1
    contacts: int = 300
    windows: int = 3  # windows of activity after the two of the first load
    kills: int = 2  # SIGKILLs of sync processes, spread over the windows
    faults: str = "hostile"
    realism: str = "realistic"
    foreign_edits: int = 5  # per window, between syncs
    max_attempts: int = 12  # runs of one window before the harness gives up
    sync_timeout: float = 600
    mode: str = "cli"  # "prod": through make prod's deployment; "cli": crm-genesys processes
    daemon_kill_share: float = 0.25  # prod mode: of the kills, the share that hit the daemon


@dataclass
class ChaosResult:
    config: ChaosConfig
    windows: int = 0
    contacts: int = 0
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    daemon_kills: int = 0
    full_sync_kills: int = 0
    retries: int = 0
    duplicates: int = 0
    missing: int = 0
    stale: int = 0
    wrong_fields: int = 0
    foreign_edits_lost: int = 0
    accounting_mismatches: int = 0
    foreign_edits: int = 0
    seconds: float = 0.0
    disk: DiskReport | None = None
    problems: list[str] = field(default_factory=list)

    ZEROS = (
        "duplicates",
        "missing",
        "stale",
        "wrong_fields",
        "foreign_edits_lost",
        "accounting_mismatches",
    )

    @property
    def ok(self) -> bool:
        return all(getattr(self, n) == 0 for n in self.ZEROS) and bool(
            self.disk and self.disk.clean
        )

    def table(self) -> str:
        c = self.config
        rows = [
            ("seed", c.seed),
            ("fault profile / realism", f"{c.faults} / {c.realism}"),
            ("windows", self.windows),
            ("contacts (expected in Genesys)", self.contacts),
            ("requests", self.requests),
            *((f"injected: {k}", v) for k, v in sorted(self.faults.items())),
            ("foreign edits", self.foreign_edits),
            ("mode", c.mode),
            ("kills (SIGKILL)", self.kills),
            ("  of them the daemon", self.daemon_kills),
            ("  of them the full sync", self.full_sync_kills),
            ("retries (re-runs after a failed or killed run)", self.retries),
            *((n.replace("_", " "), getattr(self, n)) for n in self.ZEROS),
            ("disk scan", "clean" if self.disk and self.disk.clean else f"{self.disk}"),
            ("seconds", round(self.seconds)),
        ]
        width = max(len(str(k)) for k, _ in rows)
        return "\n".join(f"| {k!s:<{width}} | {v!s:>10} |" for k, v in rows)


def _window_key(start: datetime) -> str:
    return start.strftime("%Y-%m-%d-%H:%M")


def _activity(contacts: int) -> dict[str, int]:
    """Per window: a few percent of the CRM changes (at least a handful of each kind)."""
    return {
        "updates": max(5, contacts // 25),
        "deletes": max(2, contacts // 200),
        "reindex": max(3, contacts // 50),
        "creates": max(3, contacts // 50),
        "hard_deletes": max(1, contacts // 1000),
        "phone_moves": max(2, contacts // 100),
    }


def run_chaos(root: Path, config: ChaosConfig, *, log: Any = print) -> ChaosResult:
    """The whole scenario under `root` (a fresh directory); see the module docstring."""
    started = time.monotonic()
    rng = np.random.default_rng(config.seed)
    result = ChaosResult(config)
    # Every window lies in the past: the first load's window, then one per round of activity.
    # Every window lies in the past: two windows of first load, then one per round of activity.
    top = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    first = top - (config.windows + 3) * HOUR
    server_args = ("--realism", config.realism, "--faults", config.faults,
                   "--seed", str(config.seed))  # fmt: skip
    # The demo mapping, told that CRM times carry offsets (the activity writes them).
    root.mkdir(parents=True, exist_ok=True)
    mapping = root / "mapping.yaml"
    mapping.write_text(
        DEMO_MAPPING.read_text().replace("max_offset_hours: 0 ", "max_offset_hours: 14")
    )
    env = {"CRM_GENESYS_PARTITION_START": _window_key(first), "CRM_MAPPING": str(mapping)}
    deployment: Deployment
    if config.mode == "prod":
        deployment = start_prod_deployment(
            root,
            *server_args,
            **env,
            # Windows are launched by the harness (as a backfill would be); the live path is
            # another scenario.
            CRM_GENESYS_LIVE="off",
            CRM_GENESYS_RETRY_BASE_DELAY_MINUTES="0",
            CRM_GENESYS_MAX_WINDOW_ATTEMPTS=str(config.max_attempts),
            # 100 entities per bulk request (the platform's maximum, the production default).
            GENESYS_BATCH_SIZE="100",
            GENESYS_MAX_IN_FLIGHT="32",  # the emulator's budget is 500 requests/s
        )
    else:
        deployment = start_deployment(root, *server_args, **env)
    try:
        generate_demo_crm(
            deployment.crm_path,
            rows=config.contacts,
            seed=config.seed,
            now=first + 2 * HOUR + HOUR / 2,
            windows=2,
            window=HOUR,
            mixed_times=True,
        )
        push = deployment.cli("schema", "push")
        assert push.returncode == 0, push.stdout + push.stderr
        if isinstance(deployment, ProdDeployment):
            deployment.start()
        total = config.windows + 2
        # One kill goes to the full sync at the end; the others to windows.
        kill_windows = Counter(rng.integers(0, total, max(0, config.kills - 1)).tolist())
        if config.mode == "cli" and config.kills > 1 and not kill_windows[1]:
            # The first window synced takes a kill (after an unanswered add: `_sync_window`).
            donor = next(k for k, n in sorted(kill_windows.items()) if n > 0)
            kill_windows[donor] -= 1
            kill_windows[1] += 1
        edits: list[ForeignEdit] = []
        # The first load out of order, as a retried old window runs after a newer one: the
        # second window's tombstones of keys live in the first must win (the version guard).
        order = [1, 0, *range(2, total)]
        now = first + HOUR + HOUR / 2  # in the second window: the next activity is the third's
        for index in order:
            if index > 1:
                now = next_window_now(deployment.crm_path, now)
                simulate_activity(
                    deployment.crm_path,
                    now=now,
                    seed=config.seed * 1000 + index,
                    mixed_times=True,
                    **_activity(config.contacts),
                )
            window = _window_key(first + index * HOUR)
            _sync_window(deployment, window, kill_windows[index], rng, result, log)
            result.windows += 1
            answer = deployment.server.post(
                "/__emulator/foreign-writer",
                {
                    "seed": config.seed * 7 + index,
                    "edits": config.foreign_edits,
                    "kinds": FOREIGN_KINDS,
                },
            )
            edits += [ForeignEdit(**e) for e in _edits_of(answer)]
        # The hard deletes are found by a full sync's mirror: killed once, then to its end.
        _full_sync(deployment, rng, result, log, kill=config.kills > 0)
        # The foreign edits of the last round meet one more sync of the last window.
        _sync_window(deployment, window, 0, rng, result, log)
        result.foreign_edits = len(edits)
        _compare(deployment, first, first + total * HOUR, edits, result)
        _count_requests(deployment, result)
        result.accounting_mismatches = _accounting_mismatches(
            deployment, [_window_key(first + i * HOUR) for i in range(total)]
        )
        result.disk = scan_deployment(
            deployment, genesys_values(deployment) + contact_values_of(deployment.crm_path)
        )
    finally:
        deployment.stop()
    result.seconds = time.monotonic() - started
    return result


def _edits_of(answer: Any) -> list[dict[str, Any]]:
    items = answer.get("edits", answer) if isinstance(answer, dict) else answer
    names = ("kind", "contact_id", "field", "value", "merged_ids")
    return [{k: e[k] for k in names if k in e} for e in items]


def _sync_window(
    deployment: Deployment,
    window: str,
    kills: int,
    rng: np.random.Generator,
    result: ChaosResult,
    log: Any,
) -> None:
    """Sync `window` until a run succeeds, SIGKILLing the first `kills` runs at random points."""
    if isinstance(deployment, ProdDeployment):
        _prod_window(deployment, window, kills, rng, result, log)
        return
    for attempt in range(result.config.max_attempts):
        if attempt < kills and result.kills == 0 and _kill_after_unanswered_add(deployment, window):
            # The first kill of the run lands where only the intent records prevent a
            # duplicate: an add applied by Genesys whose answer never reached the sync.
            result.kills += 1
            result.retries += 1
            log(f"window {window}: run {deployment.runs} killed after an unanswered add")
            continue
        if attempt < kills:
            child, signalled = deployment.start_and_signal(
                window, after_requests=int(rng.integers(2, 25)), limit=result.config.sync_timeout
            )
            status = child.wait(timeout=60)
            if signalled:
                result.kills += 1
                result.retries += 1
                log(f"window {window}: run {deployment.runs} killed")
                continue
        else:
            status = deployment.sync(window, timeout=result.config.sync_timeout)
        if status == 0:
            log(f"window {window}: run {deployment.runs} succeeded")
            return
        result.retries += 1
        log(f"window {window}: run {deployment.runs} failed ({status}), re-running")
    raise AssertionError(
        f"window {window} did not succeed in {result.config.max_attempts} runs:\n"
        + deployment.output()[-3000:]
    )


def _counter(deployment: Deployment, name: str) -> int:
    return int(deployment.server.get("/__emulator/stats")["counters"].get(name, 0))


def _kill_after_unanswered_add(deployment: Deployment, window: str) -> bool:
    """Run a sync; once Genesys has applied one of its adds, drop the connection after every
    later write, and SIGKILL the sync as soon as one more add was applied unanswered. Whether
    it was killed so (False: it ended first). The fault profile is restored afterwards."""
    faults = deployment.server.get("/__emulator/faults")
    added = _counter(deployment, "contacts_added")
    child = deployment.start_sync(window)
    killed = False
    try:
        deadline = time.monotonic() + 120
        while child.poll() is None and _counter(deployment, "contacts_added") == added:
            assert time.monotonic() < deadline, "the sync added nothing"
            time.sleep(0.005)
        quiet = {k: 0.0 for k in ("p_drop", "p_429", "p_500", "p_502", "p_503", "p_504")}
        deployment.server.put("/__emulator/faults", {**faults, **quiet, "p_drop_after_write": 1.0})
        added = _counter(deployment, "contacts_added")
        while child.poll() is None and time.monotonic() < deadline:
            if _counter(deployment, "contacts_added") > added:
                child.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
    finally:
        deployment.server.put("/__emulator/faults", faults)
        child.wait(timeout=60)
    return killed


def _kill_point(rng: np.random.Generator) -> tuple[int, float]:
    """Where a run dies: after this many more emulator requests, or this many seconds after it
    started, whichever comes first (early in a step, mid-sink, or between steps)."""
    return int(rng.integers(1, 40)), float(rng.uniform(0.5, 25.0))


def _prod_window(
    deployment: ProdDeployment,
    window: str,
    kills: int,
    rng: np.random.Generator,
    result: ChaosResult,
    log: Any,
) -> None:
    """Launch `window` into the run queue; kill `kills` of its runs (worker or daemon) at random
    points; wait until one run succeeds. Re-runs come from `retry_failed_windows`."""
    before = {r.run_id for r in deployment.job_runs("sync_job", window)}
    deployment.launch("sync_job", partition=window)
    deadline = time.monotonic() + result.config.sync_timeout * 2
    killed: set[str] = set()
    watched: dict[str, tuple[int, float]] = {}  # run id -> (requests, time) when seen started
    point = _kill_point(rng)
    while time.monotonic() < deadline:
        runs = [r for r in deployment.job_runs("sync_job", window) if r.run_id not in before]
        if any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs):
            result.retries += len(runs) - 1
            log(f"window {window}: succeeded after {len(runs)} run(s)")
            return
        finished = [r for r in runs if r.is_finished]
        if len(finished) >= result.config.max_attempts:
            break
        running = [r for r in runs if r.status == dg.DagsterRunStatus.STARTED]
        if len(killed) < kills and running:
            run = running[-1]
            seen = watched.setdefault(run.run_id, (deployment.requests_seen(), time.monotonic()))
            due = (
                deployment.requests_seen() >= seen[0] + point[0]
                or time.monotonic() >= seen[1] + point[1]
            )
            if due and run.run_id not in killed:
                if rng.random() < result.config.daemon_kill_share:
                    log(f"window {window}: SIGKILL dagster-daemon during run {run.run_id[:8]}")
                    deployment.kill_daemon()
                    result.daemon_kills += 1
                elif n := deployment.kill_run(run.run_id):
                    log(f"window {window}: SIGKILL run {run.run_id[:8]} ({n} processes)")
                else:
                    continue  # no process of the run has announced itself yet
                killed.add(run.run_id)
                point = _kill_point(rng)
                result.kills += 1
        time.sleep(0.25)
    raise AssertionError(
        f"window {window} did not succeed: "
        + ", ".join(
            f"{r.run_id[:8]} {r.status.value}" for r in deployment.job_runs("sync_job", window)
        )
    )


def _full_sync(
    deployment: Deployment, rng: np.random.Generator, result: ChaosResult, log: Any, *, kill: bool
) -> None:
    """A full sync with its mirror, SIGKILLed once at a random point when `kill`, then run again
    to its end (it resumes); in prod mode the cutover windows it hands over must end too."""
    after, _ = _kill_point(rng)
    if isinstance(deployment, ProdDeployment):
        if kill:
            run_id = deployment.launch("full_sync_job")
            base = None
            deadline = time.monotonic() + result.config.sync_timeout
            while time.monotonic() < deadline:
                [run] = [r for r in deployment.job_runs("full_sync_job") if r.run_id == run_id]
                if run.is_finished:
                    break
                if run.status == dg.DagsterRunStatus.STARTED:
                    base = deployment.requests_seen() if base is None else base
                    if deployment.requests_seen() >= base + after and (
                        n := deployment.kill_run(run_id)
                    ):
                        result.kills += 1
                        result.full_sync_kills += 1
                        log(f"full sync: SIGKILL run {run_id[:8]} ({n} processes)")
                        break
                time.sleep(0.1)
            _wait_idle(deployment, result)
        for _ in range(result.config.max_attempts):
            run_id = deployment.launch("full_sync_job")
            _wait_idle(deployment, result)
            [run] = [r for r in deployment.job_runs("full_sync_job") if r.run_id == run_id]
            if run.status == dg.DagsterRunStatus.SUCCESS:
                log("full sync: succeeded")
                _wait_idle(deployment, result)  # the cutover windows
                return
            result.retries += 1
            log(f"full sync: run {run_id[:8]} {run.status.value}, launching again")
        raise AssertionError("the full sync did not succeed")
    if kill:
        base = deployment.requests_seen()
        child = deployment.start_command("full-sync")
        while child.poll() is None:
            if deployment.requests_seen() >= base + after:
                child.send_signal(signal.SIGKILL)
                result.kills += 1
                result.full_sync_kills += 1
                log("full sync: SIGKILL")
                break
            time.sleep(0.005)
        child.wait(timeout=60)
    for _ in range(result.config.max_attempts):
        done = deployment.cli("full-sync", timeout=result.config.sync_timeout)
        if done.returncode == 0:
            log("full sync: succeeded")
            return
        result.retries += 1
        log(f"full sync failed ({done.returncode}), re-running: {done.stderr[-300:]}")
    raise AssertionError("the full sync did not succeed")


def _wait_idle(deployment: ProdDeployment, result: ChaosResult) -> None:
    """Until no run is queued or in progress (with a deadline)."""
    deadline = time.monotonic() + result.config.sync_timeout * 2
    while deployment.active_runs():
        assert time.monotonic() < deadline, "runs still in progress at the deadline"
        time.sleep(1)


def _our_key(contact: dict[str, Any], foreign_values: set[str]) -> list[str]:
    return [
        e["value"] for e in contact.get("externalIds") or [] if e["value"] not in foreign_values
    ]


def _compare(
    deployment: Deployment,
    start: datetime,
    end: datetime,
    edits: list[ForeignEdit],
    result: ChaosResult,
) -> None:
    """Genesys against the oracle, field by field; foreign edits against the contacts."""
    expected = expected_contacts(deployment.crm_path, start, end, strict_dots=True)
    result.contacts = len(expected)
    contacts = deployment.contacts()
    by_id = {c["id"]: c for c in contacts}
    foreign_values = {
        str(e.value.get("value")) for e in edits if e.field == "externalIds" and e.value
    }
    keys: Counter[str] = Counter()
    held: dict[str, dict[str, Any]] = {}
    for contact in contacts:
        for key in _our_key(contact, foreign_values):
            keys[key] += 1
            held[key] = contact
    result.duplicates = sum(n - 1 for n in keys.values() if n > 1)
    result.missing = len(set(expected) - set(keys))
    extra = set(keys) - set(expected)
    tiers = _latest_tiers(deployment.crm_path, [e.crm_id for e in expected.values()])
    stale_tiers = 0
    wrong = 0
    for key, want in expected.items():
        contact = held.get(key)
        if contact is None:
            continue
        if (contact.get("firstName"), contact.get("lastName")) != (
            want.first_name,
            want.last_name,
        ):
            wrong += 1
            result.problems.append(f"{key}: names {contact.get('firstName')!r}")
        tier = (contact.get("customFields") or {}).get("customer_tier_enum")
        crm_tier = tiers.get(want.crm_id)
        if crm_tier and (tier or "").casefold() != crm_tier.strip().casefold():
            stale_tiers += 1
            result.problems.append(f"{key}: tier {tier!r}, CRM {crm_tier!r}")
    result.stale = len(extra) + stale_tiers
    result.problems += [f"{k}: in Genesys, not in the CRM" for k in sorted(extra)[:20]]
    result.wrong_fields = wrong
    lost = 0
    # A later edit of one scalar field of one contact replaces the earlier (surveyOptOut
    # toggles); items of list fields (ExternalIds, identifiers) must all survive.
    latest: dict[tuple[str, str], ForeignEdit] = {}
    for n, edit in enumerate(edits):
        many = edit.field in ("externalIds", "identifiers")
        latest[(edit.contact_id, edit.field if not many else f"{edit.field}#{n}")] = edit
    for edit in latest.values():
        contact = by_id.get(edit.contact_id)
        if contact is None or not edit.survives_in(contact):
            # The contact may be gone for a CRM reason (deleted in the CRM): not a lost edit.
            if contact is None and not any(
                edit.contact_id == held.get(k, {}).get("id") for k in expected
            ):
                continue
            lost += 1
            result.problems.append(f"foreign edit lost: {edit}")
    result.foreign_edits_lost = lost


def _latest_tiers(crm_path: Path, crm_ids: list[int]) -> dict[int, str]:
    conn = sqlite3.connect(f"file:{crm_path}?mode=ro", uri=True)
    try:
        return {
            int(i): t
            for i, t in conn.execute("SELECT id, customer_tier FROM contacts")
            if t and i in set(crm_ids)
        }
    finally:
        conn.close()


def _count_requests(deployment: Deployment, result: ChaosResult) -> None:
    stats = deployment.server.get("/__emulator/stats")
    counters = stats.get("counters", {})
    result.requests = int(counters.get("requests", 0))
    for name, n in counters.items():
        if "fault" in name or name.startswith(("injected", "p_")):
            result.faults[name] += int(n)


def _accounting_mismatches(deployment: Deployment, windows: list[str]) -> int:
    """Windows without a materialization of `genesys_sync`, or with one not accounted."""
    with (
        deployment.instance()
        if isinstance(deployment, ProdDeployment)
        else dg.DagsterInstance.from_config(str(deployment.dagster_home))
    ) as instance:
        bad = 0
        for window in windows:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=dg.AssetKey("genesys_sync"), asset_partitions=[window]
                ),
                limit=100,
            ).records
            metas = [r.asset_materialization.metadata for r in records]  # type: ignore[union-attr]
            if not metas or any(m["accounted"].value is not True for m in metas):
                bad += 1
        return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--faults", default="hostile")
    parser.add_argument("--mode", choices=("prod", "cli"), default="prod")
    parser.add_argument("--root", default=None, help="default: a temporary directory")
    args = parser.parse_args(argv)
    config = ChaosConfig(
        seed=args.seed,
        contacts=args.contacts,
        windows=args.windows,
        kills=args.kills,
        faults=args.faults,
        mode=args.mode,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        result = run_chaos(root, config, log=lambda m: print(m, flush=True))
    print(result.table())
    for problem in result.problems[:30]:
        print("problem:", problem)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
