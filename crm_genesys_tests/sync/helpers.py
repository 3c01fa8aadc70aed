"""Building ChangeSet `changes` frames by hand, with the documented columns."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from crm_genesys.contacts.diff import CHANGE_COLUMNS
from crm_genesys.state.store import SyncStateStore


def canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def content_hash(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()


def body_for(key: str, version: int) -> dict[str, Any]:
    return {"firstName": f"First {key}", "lastName": f"v{version}"}


def change(
    key: str,
    op: str,
    version: int,
    *,
    contact_id: str | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if op == "delete":
        payload, digest = "", ""
    else:
        payload = canonical(body if body is not None else body_for(key, version))
        digest = content_hash(payload)
    return {
        "business_key": key,
        "op": op,
        "contact_id": contact_id,
        "crm_id": f"crm-{key}",
        "crm_version": version,
        "content_hash": digest,
        "payload": payload,
    }


@dataclass
class Changes:
    """Stands in for `contacts.diff.ChangeSet` where the diff is not under test."""

    changes: pd.DataFrame
    unchanged: int = 0
    stale: int = 0


def changeset(rows: list[dict[str, Any]]) -> Changes:
    frame = pd.DataFrame(rows, columns=CHANGE_COLUMNS)
    frame["crm_version"] = frame["crm_version"].astype("int64")
    return Changes(frame)


def diff_against_state(store: SyncStateStore, wanted: dict[str, tuple[int, str | None]]) -> Changes:
    """A minimal diff by the documented rules: key -> (version, payload or None for tombstone)."""
    snap = store.snapshot(list(wanted)).set_index("business_key")
    rows = []
    for key, (version, payload) in wanted.items():
        st = snap.loc[key] if key in snap.index else None
        if st is not None and int(st.crm_version) > version:
            continue
        live = st is not None and not bool(st.deleted)
        if payload is None:
            if live:
                rows.append(change(key, "delete", version, contact_id=st.contact_id))
            continue
        digest = content_hash(payload)
        if not live:
            rows.append(change(key, "create", version, body=json.loads(payload)))
        elif st.content_hash != digest:
            rows.append(
                change(key, "update", version, contact_id=st.contact_id, body=json.loads(payload))
            )
    return changeset(rows)
