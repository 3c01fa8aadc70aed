"""Every setting of crm-genesys outside the Genesys client, declared once: name, default, parser.

Settings come from the environment. Each is read through `get(name)` (or the helpers below), which
parses the value and raises `SettingError` naming the variable when it cannot be used: a value is
never silently ignored, and each setting has exactly one default, declared in `SETTINGS`. The
Genesys connection and tuning (`GENESYS_*`) are declared by `crm_genesys.genesys.settings`.

Nothing here talks to a network or reads a secret into a log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

DEMO_MAPPING = Path(__file__).parent / "mappings" / "demo_crm.yaml"
PARTITION_FORMAT = "%Y-%m-%d-%H:%M"
WINDOW_NAMES = ("15min", "hourly", "daily")


class SettingError(ValueError):
    """A setting's value cannot be used; the message names the variable and what it accepts."""


@dataclass(frozen=True)
class Setting:
    """One environment setting: `parse` turns the raw text into the value (raising ValueError
    with a reason), `default` is the raw text used when the variable is unset or blank."""

    name: str
    default: str
    parse: Callable[[str], Any]
    help: str


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if value < low:
            raise ValueError(f"must be at least {low}")
        return value

    return parse


def _share(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be a share between 0 and 1")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return raw

    return parse


def _partition_start(raw: str) -> str:
    datetime.strptime(raw, PARTITION_FORMAT)  # ValueError names the format below
    return raw


def _text(raw: str) -> str:
    return raw


def _owners(raw: str) -> tuple[str, ...]:
    owners = tuple(o.strip() for o in raw.split(",") if o.strip())
    for owner in owners:
        if not (owner.startswith("team:") or "@" in owner):
            raise ValueError(f"{owner!r} is neither an e-mail nor team:name")
    return owners


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "CRM_GENESYS_DATA_DIR",
            ".crm_genesys",
            _text,
            "directory of the embedded defaults: demo CRM, emulator org, sync state",
        ),
        Setting(
            "CRM_GENESYS_EMULATOR_REALISM",
            "basic",
            _choice(("basic", "realistic")),
            "the embedded emulator's profile: basic, or realistic (lagging lookups, merges, "
            "divisions, one budget per OAuth client; see docs/emulator.md)",
        ),
        Setting(
            "CRM_DATABASE_URL",
            "",
            _text,
            "SQLAlchemy URL of the CRM database or its replica; the demo CRM when empty",
        ),
        Setting(
            "CRM_MAPPING", "", _text, "the mapping registry YAML; the demo CRM's mapping when empty"
        ),
        Setting(
            "SYNC_STATE_URL",
            "",
            _text,
            "SQLAlchemy URL of the sync-state store; SQLite in the data directory when empty",
        ),
        Setting(
            "CRM_GENESYS_WINDOW",
            "hourly",
            _choice(WINDOW_NAMES),
            "length of one sync window (one partition): 15min, hourly or daily",
        ),
        Setting(
            "CRM_GENESYS_PARTITION_START",
            "2026-01-01-00:00",
            _partition_start,
            "the first window, YYYY-MM-DD-HH:MM in UTC",
        ),
        Setting(
            "CRM_GENESYS_LOOKBACK_MINUTES",
            "5",
            _int_at_least(0),
            "minutes before a window's start that its extract also reads (late commits)",
        ),
        Setting(
            "CRM_GENESYS_MAX_QUARANTINE_RATE",
            "0.2",
            _share,
            "above this share of quarantined rows a window sends nothing (blocking check)",
        ),
        Setting(
            "CRM_GENESYS_QUARANTINE_MIN_ROWS",
            "50",
            _int_at_least(1),
            "the quarantine breaker stops only windows (and live ranges) of at least this many "
            "rows; a smaller one over the share is a warning and sends its valid rows",
        ),
        Setting(
            "CRM_GENESYS_MAX_CLEAR_SHARE",
            "0.2",
            _share,
            "a window whose updates would clear one field on more than this share of the "
            "updated contacts stops until confirmed (mass-clear breaker)",
        ),
        Setting(
            "CRM_GENESYS_MASS_CLEAR_MIN_CONTACTS",
            "10",
            _int_at_least(1),
            "the mass-clear breaker judges only windows with at least this many updates",
        ),
        Setting(
            "CRM_GENESYS_MAX_DELETE_SHARE",
            "0.05",
            _share,
            "a mirror or reconciliation that would delete more than this share of the live "
            "contacts stops until the count is confirmed in run config (mass-delete breaker)",
        ),
        Setting(
            "CRM_GENESYS_FULL_SYNC_CHUNK_ROWS",
            "50000",
            _int_at_least(100),
            "CRM rows per chunk of a full sync (two chunks at most are in memory at once)",
        ),
        Setting(
            "CRM_GENESYS_MAX_WINDOW_ATTEMPTS",
            "5",
            _int_at_least(1),
            "how many failed attempts of a window the retry sensor allows before it stops and "
            "asks for a person (the first run counts)",
        ),
        Setting(
            "CRM_GENESYS_RETRY_BASE_DELAY_MINUTES",
            "10",
            _int_at_least(0),
            "minutes the retry sensor waits after a window's first failed attempt; the wait "
            "doubles after each further failed attempt",
        ),
        Setting(
            "CRM_GENESYS_RETRY_MAX_DELAY_MINUTES",
            "240",
            _int_at_least(0),
            "the longest wait between two attempts of a failed window",
        ),
        Setting(
            "CRM_GENESYS_MIN_E164_COVERAGE",
            "0.8",
            _share,
            "below this share of phones normalized to E.164 the e164_coverage check warns "
            "(a wrong default country or a broken phone mapping)",
        ),
        Setting(
            "CRM_GENESYS_SCREENPOP_SAMPLE",
            "5",
            _int_at_least(0),
            "contacts per window whose phones are looked up as a CTI screen pop does, after "
            "the writes (about two requests per phone); 0 turns the check's lookups off",
        ),
        Setting(
            "CRM_GENESYS_FRAMES_URL",
            "",
            _text,
            "where the intermediate frames of a window are kept until it succeeds: a directory "
            "or an fsspec URL (s3://bucket/prefix); `frames` in the data directory when empty",
        ),
        Setting(
            "CRM_GENESYS_FRAMES_RETENTION_HOURS",
            "0",
            _int_at_least(0),
            "hours the frames of a window that succeeded are kept (0: removed at its success)",
        ),
        Setting(
            "CRM_GENESYS_FRAMES_MAX_AGE_HOURS",
            "72",
            _int_at_least(1),
            "frames of windows that never succeeded are removed after this many hours",
        ),
        Setting(
            "CRM_GENESYS_OWNERS",
            "team:contact-center-integration",
            _owners,
            "owners shown on the assets: comma-separated e-mails or team:name",
        ),
        Setting(
            "CRM_GENESYS_LIVE",
            "on",
            _choice(("on", "off")),
            "the live path (the sync_live_changes sensor) runs by default (on) or is off until "
            "started in the UI",
        ),
        Setting(
            "CRM_GENESYS_LIVE_INTERVAL_SECONDS",
            "1",
            _int_at_least(1),
            "least seconds between two looks of the live sensor at the CRM (the daemon looks "
            "at its sensors every 5 s and counts from the end of the last look: 1 to 4 mean "
            "every 5 s, 5 every 10 s)",
        ),
        Setting(
            "CRM_GENESYS_LIVE_OVERLAP_SECONDS",
            "30",
            _int_at_least(0),
            "seconds before its cursor that each live range starts again (late commits, CRM "
            "clock skew; re-read rows cost no request)",
        ),
        Setting(
            "CRM_GENESYS_LIVE_MAX_RUNS",
            "2",
            _int_at_least(1),
            "live runs queued or in flight at most; beyond, the next range grows",
        ),
        Setting(
            "CRM_GENESYS_LIVE_MAX_ROWS",
            "20000",
            _int_at_least(1),
            "CRM rows modified since the cursor that one live run takes at most (a flood is "
            "cut into runs of this size)",
        ),
        Setting(
            "CRM_GENESYS_LIVE_NOTIFY_CHANNEL",
            "",
            _text,
            "a PostgreSQL CRM's LISTEN/NOTIFY channel that signals changes; the sensor then "
            "queries the CRM only when notified (empty: poll each interval)",
        ),
        Setting(
            "CRM_GENESYS_WORKERS",
            "1",
            _int_at_least(1),
            "processes that normalize a large window (2 uses both cores, ~0.9 GiB more memory)",
        ),
        Setting(
            "CRM_GENESYS_EXECUTOR",
            "multiprocess",
            _choice(("multiprocess", "celery")),
            "how a launched run executes its steps: multiprocess (a process per step, on the "
            "run's machine) or celery (steps queued to Celery workers: CELERY_BROKER_URL)",
        ),
        Setting(
            "CELERY_BROKER_URL",
            "",
            _text,
            "the Celery broker (redis://host:6379/0) of CRM_GENESYS_EXECUTOR=celery; the "
            "workers read the same variable. May hold a password: never shown",
        ),
        Setting(
            "CELERY_RESULT_BACKEND",
            "",
            _text,
            "where Celery workers return step events (e.g. the broker's Redis); the workers "
            "read the same variable. May hold a password: never shown",
        ),
        Setting(
            "CRM_GENESYS_ALERT_WEBHOOK_URL",
            "",
            _text,
            "webhook that gets a short JSON message per failed run and failed blocking check "
            "(https, or http on a loopback host); alerting is off when empty. A secret: only "
            "its scheme and host are ever shown",
        ),
    )
}


def get(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The parsed value of setting `name` (its default when unset or blank)."""
    setting = SETTINGS[name]
    env = os.environ if environ is None else environ
    raw = env.get(name, "").strip() or setting.default
    try:
        return setting.parse(raw)
    except ValueError as exc:
        reason = str(exc) if raw != setting.default else f"default is broken: {exc}"
        if name == "CRM_GENESYS_PARTITION_START":
            reason = f"expected YYYY-MM-DD-HH:MM ({exc})"
        raise SettingError(f"{name}={raw!r} cannot be used: {reason}") from None


def check_all(environ: Mapping[str, str] | None = None) -> None:
    """Parse every setting once; raises `SettingError` for the first that cannot be used."""
    for name in SETTINGS:
        get(name, environ)


def data_dir() -> Path:
    """The directory of the embedded defaults: demo CRM, emulator org, sync state."""
    return Path(get("CRM_GENESYS_DATA_DIR")).resolve()


def demo_crm_path() -> Path:
    return data_dir() / "demo_crm.sqlite"


def emulator_db_path() -> Path:
    return data_dir() / "emulator.sqlite"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def crm_database_url() -> str:
    """`CRM_DATABASE_URL`: any SQLAlchemy URL; the demo CRM by default."""
    return str(get("CRM_DATABASE_URL")) or sqlite_url(demo_crm_path())


def frames_url() -> str:
    """`CRM_GENESYS_FRAMES_URL`: where intermediate frames live; `frames` in the data dir."""
    return str(get("CRM_GENESYS_FRAMES_URL")) or str(data_dir() / "frames")


def crm_mapping_path() -> Path:
    """`CRM_MAPPING`: the mapping registry YAML; the demo CRM's mapping by default."""
    return Path(get("CRM_MAPPING") or DEMO_MAPPING)


def sync_state_url() -> str:
    """`SYNC_STATE_URL`: the sync-state store; SQLite in the data dir by default."""
    return str(get("SYNC_STATE_URL")) or sqlite_url(data_dir() / "sync_state.sqlite")


def display_url(url: str) -> str:
    """`url` as it may be shown (errors, logs, metadata): any password replaced by `***`."""
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: never echo what might hold a secret
        return "<unparseable URL>"
