"""What has to change in Genesys: `diff(contacts, snapshot) -> ChangeSet`.

`contacts` is `NormalizationResult.contacts`; `snapshot` is what the sync-state store holds
(`business_key, contact_id, content_hash, crm_version, deleted`; `empty_snapshot()` when nothing
was synced yet). Rules, in this order, per business key (docs/internals.md):

1. row version < state version -> stale (never applied);
2. tombstone, no live state -> unchanged;
3. tombstone, live state -> delete;
4. live row, no live state -> create;
5. live row, same hash -> unchanged;
6. otherwise -> update.

"Live state" is a snapshot row that is not deleted. Unchanged rows whose version is newer than
state's are returned in `version_bumps` so the store can record them without any API call (then a
later, older version can never win). That includes tombstones of keys state never held (no state
row: version -inf), so that a retried older window cannot resurrect a record the CRM deleted;
`version_bumps.deleted` tells the store which flag to write.

One vectorised left join by position (`Index.get_indexer`); no per-row Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CHANGE_COLUMNS = [
    "business_key",
    "op",
    "contact_id",
    "crm_id",
    "crm_version",
    "content_hash",
    "payload",
]
SNAPSHOT_COLUMNS = ["business_key", "contact_id", "content_hash", "crm_version", "deleted"]


@dataclass
class ChangeSet:
    """Creates, updates and deletes to apply, and what was left alone."""

    changes: pd.DataFrame  # CHANGE_COLUMNS; op in create|update|delete; contact_id None on create
    unchanged: int
    stale: int
    version_bumps: pd.DataFrame  # business_key, crm_version, deleted

    def counts(self) -> dict[str, int]:
        """Rows per outcome, for metadata and window accounting."""
        ops = self.changes["op"].value_counts()
        return {
            "create": int(ops.get("create", 0)),
            "update": int(ops.get("update", 0)),
            "delete": int(ops.get("delete", 0)),
            "unchanged": self.unchanged,
            "stale": self.stale,
            "version_bumps": len(self.version_bumps),
        }


def empty_snapshot() -> pd.DataFrame:
    """A snapshot of a state store that holds nothing yet."""
    return pd.DataFrame(
        {
            "business_key": pd.Series([], dtype=object),
            "contact_id": pd.Series([], dtype=object),
            "content_hash": pd.Series([], dtype=object),
            "crm_version": pd.Series([], dtype="int64"),
            "deleted": pd.Series([], dtype=bool),
        }
    )


def _one_to_one(keys: np.ndarray, state_keys: np.ndarray) -> None:
    """Raise as a one-to-one merge of the two key columns would (`pandas.errors.MergeError`)."""
    left = pd.Index(keys).is_unique
    right = pd.Index(state_keys).is_unique
    if not left and not right:
        raise pd.errors.MergeError(
            "Merge keys are not unique in either left or right dataset; not a one-to-one merge"
        )
    if not left:
        raise pd.errors.MergeError(
            "Merge keys are not unique in left dataset; not a one-to-one merge"
        )
    if not right:
        raise pd.errors.MergeError(
            "Merge keys are not unique in right dataset; not a one-to-one merge"
        )


def diff(contacts: pd.DataFrame, snapshot: pd.DataFrame) -> ChangeSet:
    """Compare normalized contacts with the sync-state snapshot (see the module docstring)."""
    keys = contacts["business_key"].to_numpy(dtype=object)
    state_keys = snapshot["business_key"].to_numpy(dtype=object)
    _one_to_one(keys, state_keys)
    # The state row of each contact by position (-1: none): a left join without copying the
    # contacts' columns into a merged frame.
    at = (
        pd.Index(state_keys).get_indexer(keys)
        if len(state_keys)
        else np.full(len(keys), -1, dtype=np.intp)
    )
    matched = np.flatnonzero(at >= 0)
    at_m = at[matched]
    n = len(keys)
    # Nullable ints keep microseconds exact; a state row without a version counts as no state.
    s_versions = pd.array(snapshot["crm_version"].to_numpy(), dtype="Int64")
    has_state = np.zeros(n, dtype=bool)
    has_state[matched] = ~s_versions.isna()[at_m]
    s_version = np.zeros(n, dtype="int64")
    s_version[matched] = s_versions.to_numpy(dtype="int64", na_value=0)[at_m]
    # A state row whose deleted flag is unknown is treated as deleted: never update a ghost.
    s_deleted = np.ones(n, dtype=bool)
    s_deleted[matched] = pd.array(snapshot["deleted"].to_numpy(), dtype="boolean").to_numpy(
        dtype=bool, na_value=True
    )[at_m]
    live_state = has_state & ~s_deleted
    version = contacts["crm_version"].to_numpy(dtype="int64")
    tomb = contacts["is_deleted"].to_numpy(dtype=bool)
    hashes = contacts["content_hash"].to_numpy(dtype=object)
    same_hash = np.zeros(n, dtype=bool)
    if len(matched):
        s_hash = snapshot["content_hash"].to_numpy(dtype=object)[at_m]
        same_hash[matched] = (pd.Series(hashes[matched]) == pd.Series(s_hash)).to_numpy(
            dtype=bool, na_value=False
        )
    stale = has_state & (version < s_version)
    undecided = ~stale
    unchanged_tomb = undecided & tomb & ~live_state
    delete = undecided & tomb & live_state
    create = undecided & ~tomb & ~live_state
    unchanged_live = undecided & ~tomb & live_state & same_hash
    update = undecided & ~tomb & live_state & ~same_hash
    unchanged = unchanged_tomb | unchanged_live
    newer = ~has_state | (version > s_version)
    bumps = unchanged & newer

    op = np.full(n, None, dtype=object)
    op[create] = "create"
    op[update] = "update"
    op[delete] = "delete"
    changed = create | update | delete
    contact_id = np.full(n, None, dtype=object)
    contact_id[matched] = pd.Series(snapshot["contact_id"].to_numpy(dtype=object)).to_numpy(
        dtype=object, na_value=None
    )[at_m]
    contact_id[create] = None
    changes = pd.DataFrame(
        {
            "business_key": keys[changed],
            "op": op[changed],
            "contact_id": contact_id[changed],
            "crm_id": contacts["crm_id"].to_numpy(dtype=object)[changed],
            "crm_version": version[changed],
            "content_hash": hashes[changed],
            "payload": contacts["payload"].to_numpy(dtype=object)[changed],
        },
        columns=CHANGE_COLUMNS,
        copy=False,  # fresh arrays: no consolidated copy
    )
    version_bumps = pd.DataFrame(
        {
            "business_key": keys[bumps],
            "crm_version": version[bumps],
            "deleted": tomb[bumps],
        }
    )
    return ChangeSet(
        changes=changes,
        unchanged=int(unchanged.sum()),
        stale=int(stale.sum()),
        version_bumps=version_bumps,
    )
