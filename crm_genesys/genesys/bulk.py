"""Bulk request planning and result matching, as pure functions.

The bulk endpoints answer `{results: [{id, success, status, entity, error}], errorCount,
errorIndexes}` in no guaranteed order. Results are matched to request entities by key:

* `update` / `remove`: the contact id (`result.id`, else `result.entity.id`, else the id of the
  entity echoed in `result.error.entity`);
* `add`: the entity's ExternalIds (`externalIds[].externalSource.id` + `value`), read from the
  result's entity or the echoed error entity; the new contact id comes from `result.id`.

A failure that carries no key is placed by `errorIndexes`, read as positions of failed entities
in the request; only what is still unplaced after keys and indexes is marked "missing" (for an add
that means the outcome is unknown: it may have been created).
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from crm_genesys.genesys.types import BulkItemResult, BulkOp, Contact

# Envelope `{"entities":[]}` and the comma between entities.
_ENVELOPE_BYTES = len('{"entities":[]}')
# A 5xx on an add item may hide a write that happened: resolve it by lookup, never resend.
_UNKNOWN_ITEM_STATUSES = frozenset({0, 500, 502, 504})
_RETRYABLE_ITEM_STATUSES = frozenset({0, 408, 429, 500, 502, 503, 504})


def encode_body(body: object) -> bytes:
    """The JSON bytes the client sends: compact, UTF-8 (what `request.bytes.max` measures)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def body_size(entity: Contact) -> int:
    """Bytes `entity` takes inside a request body encoded by `encode_body`."""
    return len(encode_body(entity))


def entities_body(encoded: Iterable[bytes]) -> bytes:
    """`encode_body({"entities": [...]})` from the entities already encoded one by one (byte
    for byte the same: each entity is encoded once, for its size and for the request)."""
    return b'{"entities":[' + b",".join(encoded) + b"]}"


def plan_batches(
    entities: Sequence[Contact],
    *,
    batch_size: int,
    max_bytes: int,
    sizes: Sequence[int] | None = None,
) -> list[list[int]]:
    """Request indexes grouped into batches of at most `batch_size` entities whose body stays
    under `max_bytes`. Order is kept. An entity too large on its own gets a batch of its own
    (the platform's 413 then fails just that one). `sizes` are the entities' `body_size`s
    when the caller has them already."""
    batches: list[list[int]] = []
    current: list[int] = []
    size = _ENVELOPE_BYTES
    for index, entity in enumerate(entities):
        entity_bytes = (body_size(entity) if sizes is None else sizes[index]) + 1  # the comma
        if current and (len(current) >= batch_size or size + entity_bytes > max_bytes):
            batches.append(current)
            current, size = [], _ENVELOPE_BYTES
        current.append(index)
        size += entity_bytes
    if current:
        batches.append(current)
    return batches


def request_keys(op: BulkOp, entity: Mapping[str, Any]) -> list[str]:
    """The keys a result for this request entity can be recognised by."""
    if op == "add":
        return _external_id_keys(entity)
    contact_id = entity.get("id")
    return [f"id:{contact_id}"] if contact_id else []


def result_keys(op: BulkOp, result: Mapping[str, Any]) -> list[str]:
    """The keys a bulk result carries, most specific first."""
    entity = _mapping(result.get("entity"))
    echoed = _mapping(_mapping(result.get("error")).get("entity"))
    if op == "add":
        keys: list[str] = []
        for source in (entity, echoed):
            keys.extend(_external_id_keys(source))
        return keys
    ids = (result.get("id"), entity.get("id"), echoed.get("id"))
    return [f"id:{i}" for i in ids if i]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _external_id_keys(entity: Mapping[str, Any]) -> list[str]:
    keys: list[str] = []
    externals = entity.get("externalIds")
    if not isinstance(externals, list):
        return keys
    for ext in externals:
        if not isinstance(ext, Mapping) or ext.get("value") is None:
            continue
        source = ext.get("externalSource")
        source_id = source.get("id") if isinstance(source, Mapping) else None
        if source_id:
            keys.append(f"xid:{source_id}|{ext['value']}")
    # Value-only keys as a fallback when a platform echo omits the source.
    keys.extend(
        f"xv:{ext['value']}"
        for ext in externals
        if isinstance(ext, Mapping) and ext.get("value") is not None
    )
    return keys


def match_bulk_results(
    op: BulkOp, entities: Sequence[Contact], body: Mapping[str, Any]
) -> list[BulkItemResult]:
    """One `BulkItemResult` per request entity, in request order, from a bulk response body."""
    raw_results = body.get("results")
    results: list[Mapping[str, Any]] = (
        [r for r in raw_results if isinstance(r, Mapping)] if isinstance(raw_results, list) else []
    )
    index_by_key: dict[str, deque[int]] = defaultdict(deque)
    for index, entity in enumerate(entities):
        for key in request_keys(op, entity):
            index_by_key[key].append(index)
    placed: dict[int, Mapping[str, Any]] = {}
    unkeyed: list[Mapping[str, Any]] = []

    for result in results:
        target = _take(index_by_key, result_keys(op, result), placed)
        if target is None:
            unkeyed.append(result)
        else:
            placed[target] = result

    # Failures without a key: the request positions named by errorIndexes, in ascending order.
    error_indexes = sorted(
        {i for i in _ints(body.get("errorIndexes")) if 0 <= i < len(entities) and i not in placed}
    )
    unkeyed_failures = [r for r in unkeyed if not _succeeded(r)]
    for index, result in zip(error_indexes, unkeyed_failures, strict=False):
        placed[index] = result

    return [
        _item(op, entities[i], placed[i]) if i in placed else _missing(op, entities[i])
        for i in range(len(entities))
    ]


def _take(
    index_by_key: Mapping[str, deque[int]], keys: Iterable[str], placed: Mapping[int, Any]
) -> int | None:
    for key in keys:
        queue = index_by_key.get(key)
        while queue:
            index = queue.popleft()
            if index not in placed:
                return index
    return None


def _ints(raw: object) -> list[int]:
    if not isinstance(raw, list):
        return []
    return [i for i in raw if isinstance(i, int) and not isinstance(i, bool)]


def _succeeded(result: Mapping[str, Any]) -> bool:
    return bool(result.get("success"))


def _item(op: BulkOp, request: Contact, result: Mapping[str, Any]) -> BulkItemResult:
    entity = _mapping(result.get("entity"))
    status = _status(result)
    contact_id = result.get("id") or entity.get("id") or request.get("id")
    if _succeeded(result):
        return BulkItemResult(
            op=op,
            success=True,
            status=status or 200,
            contact_id=str(contact_id) if contact_id else None,
            entity=dict(entity) if entity else None,
        )
    error = _mapping(result.get("error"))
    if op == "remove" and status == 404:
        # Already gone: the goal of a remove is reached.
        return BulkItemResult(op=op, success=True, status=404, contact_id=request.get("id"))
    code = error.get("code")
    message = error.get("message")
    retryable = bool(error.get("retryable")) or status in _RETRYABLE_ITEM_STATUSES
    return BulkItemResult(
        op=op,
        success=False,
        status=status,
        contact_id=request.get("id") if op != "add" else None,
        error_code=str(code) if code else None,
        error_message=str(message)[:500] if message else None,
        retryable=retryable,
        outcome_unknown=op == "add" and status in _UNKNOWN_ITEM_STATUSES,
    )


def _status(result: Mapping[str, Any]) -> int:
    error = _mapping(result.get("error"))
    for raw in (result.get("status"), error.get("status")):
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.isdigit():
            return int(raw)
    return 200 if _succeeded(result) else 0


def _missing(op: BulkOp, request: Contact) -> BulkItemResult:
    return BulkItemResult(
        op=op,
        success=False,
        status=0,
        contact_id=request.get("id") if op != "add" else None,
        error_code="result.missing",
        error_message="the bulk response had no result for this entity",
        retryable=True,
        outcome_unknown=op == "add",
    )


def batch_failure(
    op: BulkOp,
    entities: Sequence[Contact],
    *,
    status: int,
    code: str | None,
    message: str,
    retryable: bool,
    outcome_unknown: bool,
) -> list[BulkItemResult]:
    """The same failure for every entity of a batch the platform did not answer item by item."""
    return [
        BulkItemResult(
            op=op,
            success=False,
            status=status,
            contact_id=e.get("id") if op != "add" else None,
            error_code=code,
            error_message=message[:500],
            retryable=retryable,
            outcome_unknown=outcome_unknown and op == "add",
        )
        for e in entities
    ]
