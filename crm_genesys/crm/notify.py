"""Change notifications of a PostgreSQL CRM (`LISTEN`/`NOTIFY`): the live sensor queries the CRM
only when the CRM said something changed, instead of counting rows on every tick.

What the CRM must provide (docs/LIVE.md): a trigger that runs `NOTIFY <channel>` (or
`pg_notify`) after every insert, update and delete of the contacts table. One notification per
statement is enough: the payload is not read, the sensor re-reads the range since its cursor.

`ChangeNotifications` holds one connection, opened on first use, that listens on the channel;
it lives as long as the process (the code server that evaluates the sensor), so notifications
that arrive between two ticks wait in it. `changed()` answers True when a notification arrived
since the last call, and also whenever the connection is new or was lost: then nothing proves
that nothing changed, and the caller looks for itself.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

_CHANNEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class ChangeNotifications:
    """Notifications on `channel` of the PostgreSQL database at SQLAlchemy URL `url`."""

    def __init__(self, url: str, channel: str) -> None:
        if not _CHANNEL.match(channel):
            raise ValueError(f"{channel!r} is not a plain PostgreSQL identifier (a channel name)")
        parsed = sa.make_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise ValueError("LISTEN/NOTIFY needs a PostgreSQL CRM (CRM_DATABASE_URL)")
        # libpq's URL form (psycopg 3 takes it as is); the password stays in memory only.
        self._dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self.channel = channel
        self._conn: Any = None
        self._lock = threading.Lock()

    def changed(self) -> bool:
        """Whether the CRM may have changed since the last call (see the module docstring)."""
        import psycopg

        with self._lock:
            if self._conn is None or self._conn.closed:
                try:
                    self._conn = psycopg.connect(self._dsn, autocommit=True)
                    self._conn.execute(f"LISTEN {self.channel}")
                except psycopg.Error as exc:
                    log.warning("cannot LISTEN on the CRM (%s); polling", type(exc).__name__)
                    self._conn = None
                return True
            try:
                return len(list(self._conn.notifies(timeout=0))) > 0  # drains them all
            except psycopg.Error as exc:
                log.warning("the CRM's LISTEN connection failed (%s); polling", type(exc).__name__)
                self.close()
                return True

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection: nothing left to do
                conn.close()


_LISTENERS: dict[tuple[str, str], ChangeNotifications] = {}
_LISTENERS_LOCK = threading.Lock()


def listener(url: str, channel: str) -> ChangeNotifications:
    """The process's listener of `channel` on `url` (one connection per pair)."""
    with _LISTENERS_LOCK:
        found = _LISTENERS.get((url, channel))
        if found is None:
            found = _LISTENERS[(url, channel)] = ChangeNotifications(url, channel)
        return found
