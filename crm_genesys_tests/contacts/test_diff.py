"""diff: the rules of docs/internals.md as properties over random contacts and snapshots."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_genesys.contacts.diff import diff, empty_snapshot

_KEYS = [f"k{i}" for i in range(12)]


@st.composite
def _frames(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    keys = draw(st.lists(st.sampled_from(_KEYS), unique=True, max_size=12))
    rows = []
    for k in keys:
        dead = draw(st.booleans())
        h = "" if dead else draw(st.sampled_from(["h1", "h2"]))
        rows.append((k, "1", draw(st.integers(0, 5)), dead, h, "" if dead else "{}"))
    contacts = pd.DataFrame(
        rows,
        columns=["business_key", "crm_id", "crm_version", "is_deleted", "content_hash", "payload"],
    ).astype({"crm_version": "int64", "is_deleted": bool})
    skeys = draw(st.lists(st.sampled_from(_KEYS), unique=True, max_size=12))
    srows = [
        (k, f"c-{k}", draw(st.sampled_from(["h1", "h2", None])), draw(st.integers(0, 5)),
         draw(st.booleans()))
        for k in skeys
    ]  # fmt: skip
    snap = pd.DataFrame(
        srows, columns=["business_key", "contact_id", "content_hash", "crm_version", "deleted"]
    ).astype({"crm_version": "int64", "deleted": bool})
    return contacts, snap


def _apply(snap: pd.DataFrame, cs) -> dict[str, tuple]:  # type: ignore[no-untyped-def]
    state = {r.business_key: (r.content_hash, r.crm_version, r.deleted) for r in snap.itertuples()}
    for r in cs.changes.itertuples():
        state[r.business_key] = (r.content_hash, r.crm_version, r.op == "delete")
    for r in cs.version_bumps.itertuples():
        old = state.get(r.business_key, (None, -1, True))
        state[r.business_key] = (old[0], r.crm_version, bool(r.deleted) or old[2])
    return state


@settings(max_examples=300, deadline=None)
@given(_frames())
def test_rules_hold(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    contacts, snap = frames
    cs = diff(contacts, snap)
    counts = cs.counts()
    assert counts["create"] + counts["update"] + counts["delete"] + cs.unchanged + cs.stale == len(
        contacts
    )
    s = snap.set_index("business_key")
    c = contacts.set_index("business_key")
    for r in cs.changes.itertuples():
        row = c.loc[r.business_key]
        assert r.op in ("create", "update", "delete")
        if r.business_key in s.index:
            assert row.crm_version >= s.loc[r.business_key, "crm_version"]  # stale never applied
        if r.op == "create":
            assert r.contact_id is None
        else:
            assert r.contact_id == f"c-{r.business_key}"
        if r.op == "update":
            assert row.content_hash != s.loc[r.business_key, "content_hash"]  # unchanged never sent
    state = _apply(snap, cs)
    for k, row in c.iterrows():
        known = k in s.index
        if known and row.crm_version < s.loc[k, "crm_version"]:
            continue  # stale: state keeps the newer version
        h, v, dead = state[k]
        assert v == row.crm_version
        assert dead == bool(row.is_deleted)
        if not row.is_deleted:
            assert h == row.content_hash


def test_empty_snapshot_creates_live_rows_and_records_tombstones() -> None:
    contacts = pd.DataFrame(
        {
            "business_key": ["a", "b"], "crm_id": ["1", "2"],
            "crm_version": np.array([5, 6], dtype="int64"), "is_deleted": [False, True],
            "content_hash": ["h", ""], "payload": ["{}", ""],
        }
    )  # fmt: skip
    cs = diff(contacts, empty_snapshot())
    assert cs.changes["op"].tolist() == ["create"]
    assert cs.unchanged == 1 and cs.version_bumps["business_key"].tolist() == ["b"]


def test_million_rows_is_vectorised() -> None:
    n = 200_000
    keys = np.char.mod("k%d", np.arange(n)).astype(object)
    contacts = pd.DataFrame(
        {
            "business_key": keys, "crm_id": keys, "crm_version": np.full(n, 10, dtype="int64"),
            "is_deleted": np.zeros(n, dtype=bool), "content_hash": keys, "payload": keys,
        }
    )  # fmt: skip
    snap = pd.DataFrame(
        {
            "business_key": keys[::2], "contact_id": keys[::2], "content_hash": keys[::2],
            "crm_version": np.full(n // 2, 9, dtype="int64"), "deleted": np.zeros(n // 2, bool),
        }
    )  # fmt: skip
    cs = diff(contacts, snap)
    assert cs.counts()["create"] == n // 2 and cs.unchanged == n // 2
    assert len(cs.version_bumps) == n // 2
