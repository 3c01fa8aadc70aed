"""The emulated org: operations on contacts, sources, schemas and tokens, plus the request log
and counters. `create_app` puts one `Emulator` behind HTTP (`app.state.emulator`); tests use it
directly to read what the org holds (`all_contacts`), what happened (`requests`, `stats`) and to
change faults and limits at runtime.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import random
import secrets
import threading
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any

from crm_genesys.emulator.config import EmulatorConfig, FaultConfig
from crm_genesys.emulator.errors import ApiError, EntityError, FieldProblem, invalid
from crm_genesys.emulator.ratelimit import RateLimiter
from crm_genesys.emulator.store import Conflict, Store
from crm_genesys.emulator.validation import (
    ContactValidator,
    parse_phone,
    validate_schema_document,
)

API = "/api/v2/externalcontacts"
HOME_DIVISION = {"id": "2b4a7c4e-1f0d-4c1e-9a8e-0d3c6e5f7a10", "name": "Home"}
CURSOR_TTL_S = 24 * 3600


@dataclass
class RequestLogEntry:
    """One request as the emulator saw it. `status` is 0 when the connection was dropped;
    `fault` names the injected fault (`drop`, `drop_after_write`, `429`, `500`, `502`, `503`,
    `504`, `token_revoked`), `rate_limited` marks a real budget refusal, `item_failures` counts
    injected per-item failures in a bulk response, `slow_ms` the injected extra latency."""

    seq: int
    time: float
    method: str
    path: str
    status: int
    latency_ms: float
    entities: int | None = None
    fault: str | None = None
    rate_limited: bool = False
    item_failures: int = 0
    slow_ms: float = 0.0
    error_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iso(epoch: float) -> str:
    """ISO-8601 in UTC with milliseconds, as the platform writes dates."""
    stamp = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def token_digest(token: str) -> str:
    """Tokens are stored as digests, so the database never holds a usable bearer token."""
    return hashlib.sha256(token.encode()).hexdigest()


def encode_cursor(seq: int, issued: float) -> str:
    return base64.urlsafe_b64encode(f"{seq}:{int(issued)}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, now: float) -> int:
    """The position a cursor points after; 400 when it is malformed or older than 24 h."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        seq_text, issued_text = base64.urlsafe_b64decode(padded).decode().split(":")
        seq, issued = int(seq_text), int(issued_text)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(
            400, "invalid.value", "Invalid cursor", [FieldProblem("cursor", "malformed")]
        ) from None
    if now - issued > CURSOR_TTL_S:
        raise ApiError(
            400, "invalid.value", "Cursor expired", [FieldProblem("cursor", "older than 24 h")]
        )
    return seq


class Emulator:
    """One emulated Genesys Cloud org (see the package docstring for what is faithful)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = config.clock
        self.store = Store(config.db_path)
        self.faults: FaultConfig = config.faults
        self.limiter = RateLimiter(config.rate_limit_per_minute, config.clock)
        self.validator = ContactValidator(self.store.source_exists, self._schema_document)
        self._request_numbers = itertools.count(1)
        self._log: deque[RequestLogEntry] = deque(maxlen=config.request_log_size)
        self._counters: Counter[str] = Counter()
        self._log_lock = threading.Lock()

    # --- settings at runtime ----------------------------------------------------------------

    def set_faults(self, faults: FaultConfig) -> None:
        self.faults = faults

    def set_rate_limit(self, per_minute: int) -> None:
        if per_minute < 1:
            raise ValueError("rate limit must be >= 1")
        self.config.rate_limit_per_minute = per_minute
        self.limiter.limit = per_minute

    def settings(self) -> dict[str, Any]:
        return {
            "rate_limit_per_minute": self.config.rate_limit_per_minute,
            "max_bulk_entities": self.config.max_bulk_entities,
            "token_ttl_s": self.config.token_ttl_s,
            "max_request_bytes": self.config.max_request_bytes,
            "seed": self.config.seed,
        }

    def update_settings(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if key == "rate_limit_per_minute":
                self.set_rate_limit(int(value))
            elif key in ("max_bulk_entities", "token_ttl_s", "max_request_bytes", "seed"):
                if int(value) < (0 if key == "seed" else 1):
                    raise ValueError(f"{key} out of range")
                setattr(self.config, key, int(value))
            else:
                raise ValueError(f"unknown setting {key!r}")

    # --- request log ------------------------------------------------------------------------

    def next_request_number(self) -> int:
        return next(self._request_numbers)

    def record(self, entry: RequestLogEntry) -> None:
        with self._log_lock:
            self._log.append(entry)
            c = self._counters
            c["requests"] += 1
            c[f"status.{entry.status}"] += 1
            if entry.fault:
                c[f"fault.{entry.fault}"] += 1
            if entry.rate_limited:
                c["rate_limited"] += 1
            if entry.slow_ms:
                c["fault.slow"] += 1
            if entry.item_failures:
                c["fault.item_failure"] += entry.item_failures

    def count(self, name: str, n: int = 1) -> None:
        with self._log_lock:
            self._counters[name] += n

    def requests(self, since: int = 0) -> list[RequestLogEntry]:
        """Logged requests with `seq > since`, oldest first."""
        with self._log_lock:
            return [e for e in self._log if e.seq > since]

    def stats(self) -> dict[str, Any]:
        with self._log_lock:
            counters = dict(self._counters)
        return {"counters": counters, "contacts": self.store.count_contacts()}

    def reset(self, *, data: bool = True, log: bool = True) -> None:
        """Forget the org's data and/or the request log, counters and rate-limit windows."""
        if data:
            self.store.reset()
        if log:
            with self._log_lock:
                self._log.clear()
                self._counters.clear()
            self.limiter.reset()

    def all_contacts(self) -> list[dict[str, Any]]:
        """Every stored contact as the API would return it, oldest first (read-only view)."""
        return self.store.all_contacts()

    # --- tokens -----------------------------------------------------------------------------

    def issue_token(self, client_id: str, client_secret: str) -> dict[str, Any]:
        """`POST /oauth/token` for client credentials; 401 `bad.credentials` on a mismatch."""
        ok_id = secrets.compare_digest(client_id.encode(), self.config.client_id.encode())
        ok_secret = secrets.compare_digest(
            client_secret.encode(), self.config.client_secret.encode()
        )
        if not (ok_id and ok_secret):
            raise ApiError(401, "bad.credentials", "Invalid login credentials.")
        token = secrets.token_urlsafe(48)
        now = self.clock.time()
        self.store.add_token(token_digest(token), client_id, now, now + self.config.token_ttl_s)
        self.count("tokens_issued")
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.config.token_ttl_s,
        }

    def authenticate(self, token: str) -> tuple[str, float]:
        """(client id, issued at) of a live token; 401 when unknown, expired or revoked.
        A token the fault profile revokes reports `fault` on the raised error."""
        record = self.store.get_token(token_digest(token))
        if record is None:
            raise ApiError(401, "authentication.required", "Authentication failed.")
        client_id, issued, expires, revoked = record
        now = self.clock.time()
        if revoked:
            raise ApiError(401, "authentication.required", "Authentication failed: token revoked.")
        if now >= expires:
            raise ApiError(401, "authentication.required", "Authentication failed: token expired.")
        after = self.faults.revoke_tokens_after_s
        if after is not None and now - issued >= after:
            error = ApiError(
                401, "authentication.required", "Authentication failed: token revoked."
            )
            error.headers["x-emulator-fault"] = "token_revoked"
            raise error
        return client_id, issued

    def revoke_token(self, token: str) -> None:
        self.store.revoke_token(token_digest(token))

    def token_info(self, client_id: str) -> dict[str, Any]:
        org = {"id": self.config.org_id, "name": self.config.org_name}
        return {
            "organization": org,
            "homeOrganization": org,
            "authorizedScope": [],
            "OAuthClient": {"id": client_id, "name": client_id, "organization": org},
        }

    # --- contacts ---------------------------------------------------------------------------

    def _schema_document(self, schema_id: str, version: int) -> dict[str, Any] | None:
        schema = self.store.get_schema(schema_id, version)
        return schema.get("jsonSchema") if schema else None

    def _new_contact(self, fields: dict[str, Any], now: str) -> dict[str, Any]:
        contact_id = str(uuid.uuid4())
        body = dict(fields)
        body["id"] = contact_id
        body.setdefault(
            "division",
            {**HOME_DIVISION, "selfUri": f"/api/v2/authorization/divisions/{HOME_DIVISION['id']}"},
        )
        body["type"] = "Curated"
        body["createDate"] = now
        body["modifyDate"] = now
        body["selfUri"] = f"{API}/contacts/{contact_id}"
        return body

    def create_contact(self, body: Any) -> dict[str, Any]:
        try:
            fields = self.validator.validate(body)
        except EntityError as exc:
            raise exc.to_api_error() from None
        contact = self._new_contact(fields, iso(self.clock.time()))
        self.store.add_contacts([contact])
        self.count("contacts_added")
        return contact

    def get_contact(self, contact_id: str) -> dict[str, Any]:
        contact = self.store.get_contact(contact_id)
        if contact is None:
            raise _not_found("contact", contact_id)
        return contact

    def update_contact(self, contact_id: str, body: Any) -> dict[str, Any]:
        """PUT: full update of an existing contact (404 when missing: not an upsert)."""
        if isinstance(body, dict) and body.get("id") not in (None, contact_id):
            raise ApiError(
                400,
                "invalid.value",
                "The id in the body does not match the path",
                [FieldProblem("id", "does not match the path")],
            )
        try:
            fields = self.validator.validate(body)
        except EntityError as exc:
            raise exc.to_api_error() from None
        updated = self.store.replace_contacts([(contact_id, fields)], iso(self.clock.time()))
        contact = updated.get(contact_id)
        if contact is None:
            raise _not_found("contact", contact_id)
        self.count("contacts_updated")
        return contact

    def patch_contact(self, contact_id: str, body: Any) -> dict[str, Any]:
        """PATCH {changes: [{field: "$.a.b", value, action}]}, applied in order, then validated."""
        current = self.get_contact(contact_id)
        changes = body.get("changes") if isinstance(body, dict) else None
        if not isinstance(changes, list) or not changes:
            raise ApiError(
                400, "invalid.value", "changes are required", [FieldProblem("changes", "required")]
            )
        for i, change in enumerate(changes):
            _apply_patch(current, change, f"changes[{i}]")
        return self.update_contact(contact_id, current)

    def delete_contact(self, contact_id: str) -> None:
        if not self.store.delete_contacts([contact_id]):
            raise _not_found("contact", contact_id)
        self.count("contacts_removed")

    # --- bulk -------------------------------------------------------------------------------

    def _bulk_entities(self, body: Any) -> list[Any]:
        entities = body.get("entities") if isinstance(body, dict) else None
        if not isinstance(entities, list) or not entities:
            raise ApiError(
                400,
                "invalid.value",
                "entities must be a non-empty list",
                [FieldProblem("entities", "required")],
            )
        limit = self.config.max_bulk_entities
        if len(entities) > limit:
            raise ApiError(
                400,
                "bulk.entities.limit.exceeded",
                f"A bulk request may carry at most {limit} entities; got {len(entities)}.",
                [FieldProblem("entities", f"at most {limit} entities")],
            )
        return entities

    def _item_failure(self, rng: random.Random) -> EntityError | None:
        if self.faults.p_item_failure and rng.random() < self.faults.p_item_failure:
            return EntityError(
                503,
                "service.unavailable",
                "The service is temporarily unavailable.",
                retryable=True,
            )
        return None

    def bulk_add(self, body: Any, rng: random.Random) -> tuple[dict[str, Any], int]:
        """`/bulk/contacts/add`: (response, injected item failures)."""
        entities = self._bulk_entities(body)
        now = iso(self.clock.time())
        results: list[tuple[int, dict[str, Any]]] = []
        new: list[dict[str, Any]] = []
        injected = 0
        for index, entity in enumerate(entities):
            failure = self._item_failure(rng)
            if failure is not None:
                injected += 1
                results.append((index, _failed(None, failure, entity)))
                continue
            try:
                fields = self.validator.validate(entity)
            except EntityError as exc:
                results.append((index, _failed(None, exc, entity)))
                continue
            contact = self._new_contact(fields, now)
            new.append(contact)
            results.append((index, _ok(contact["id"], contact)))
        self.store.add_contacts(new)
        self.count("contacts_added", len(new))
        return self._bulk_response(results, rng), injected

    def bulk_update(self, body: Any, rng: random.Random) -> tuple[dict[str, Any], int]:
        """`/bulk/contacts/update`: entities carry `id`; a missing contact is a 404 item."""
        entities = self._bulk_entities(body)
        results: list[tuple[int, dict[str, Any]]] = []
        pending: list[tuple[int, str, dict[str, Any]]] = []
        injected = 0
        for index, entity in enumerate(entities):
            contact_id = entity.get("id") if isinstance(entity, dict) else None
            failure = self._item_failure(rng)
            if failure is not None:
                injected += 1
                results.append((index, _failed(contact_id, failure, entity)))
                continue
            if not isinstance(contact_id, str) or not contact_id:
                missing_id = invalid([FieldProblem("id", "is required for an update")])
                results.append((index, _failed(None, missing_id, entity)))
                continue
            try:
                pending.append((index, contact_id, self.validator.validate(entity)))
            except EntityError as exc:
                results.append((index, _failed(contact_id, exc, entity)))
        updated = self.store.replace_contacts(
            [(cid, fields) for _, cid, fields in pending], iso(self.clock.time())
        )
        for index, contact_id, _ in pending:
            contact = updated.get(contact_id)
            if contact is None:
                results.append((index, _failed(contact_id, _missing_item(contact_id))))
            else:
                results.append((index, _ok(contact_id, contact)))
        self.count("contacts_updated", sum(1 for c in updated.values() if c is not None))
        return self._bulk_response(results, rng), injected

    def bulk_remove(self, body: Any, rng: random.Random) -> tuple[dict[str, Any], int]:
        """`/bulk/contacts/remove` {entities: [{id}]}: a missing contact is a 404 item."""
        entities = self._bulk_entities(body)
        results: list[tuple[int, dict[str, Any]]] = []
        pending: list[tuple[int, str]] = []
        injected = 0
        for index, entity in enumerate(entities):
            contact_id = entity.get("id") if isinstance(entity, dict) else None
            failure = self._item_failure(rng)
            if failure is not None:
                injected += 1
                results.append((index, _failed(contact_id, failure)))
            elif not isinstance(contact_id, str) or not contact_id:
                results.append((index, _failed(None, invalid([FieldProblem("id", "required")]))))
            else:
                pending.append((index, contact_id))
        # A repeated id in one request is removed once; the repeat finds nothing, like a retry.
        removed = self.store.delete_contacts(cid for _, cid in pending)
        seen: set[str] = set()
        for index, contact_id in pending:
            if contact_id in removed and contact_id not in seen:
                seen.add(contact_id)
                results.append((index, {"id": contact_id, "success": True, "status": 200}))
            else:
                results.append((index, _failed(contact_id, _missing_item(contact_id))))
        self.count("contacts_removed", len(removed))
        return self._bulk_response(results, rng), injected

    def bulk_fetch(self, body: Any, rng: random.Random) -> dict[str, Any]:
        """`/bulk/contacts` {entities: [{id}]}: the contacts, a 404 item for each missing one."""
        entities = self._bulk_entities(body)
        ids = [e.get("id") if isinstance(e, dict) else None for e in entities]
        found = self.store.get_contacts([i for i in ids if isinstance(i, str)])
        results: list[tuple[int, dict[str, Any]]] = []
        for index, contact_id in enumerate(ids):
            if not isinstance(contact_id, str):
                results.append((index, _failed(None, invalid([FieldProblem("id", "required")]))))
            elif contact_id in found:
                results.append((index, _ok(contact_id, found[contact_id])))
            else:
                results.append((index, _failed(contact_id, _missing_item(contact_id))))
        return self._bulk_response(results, rng)

    def _bulk_response(
        self, indexed: list[tuple[int, dict[str, Any]]], rng: random.Random
    ) -> dict[str, Any]:
        error_indexes = sorted(i for i, r in indexed if not r["success"])
        results = [r for _, r in indexed]
        # The platform does not promise request order; shuffling makes clients prove they
        # match results by id / ExternalId. Seeded by the org seed and the request's generator.
        random.Random(f"{self.config.seed}:{rng.random()}").shuffle(results)
        return {"results": results, "errorCount": len(error_indexes), "errorIndexes": error_indexes}

    # --- lookups and scan -------------------------------------------------------------------

    def identifier_lookup(self, body: Any) -> dict[str, Any]:
        """`POST /identifierlookup/contacts` for ExternalId, Phone and Email; 404 on a miss.
        When several contacts share the identifier, the oldest is returned."""
        if not isinstance(body, dict):
            raise ApiError(400, "invalid.value", "body must be a ContactIdentifier")
        kind, value = body.get("type"), body.get("value")
        if not isinstance(value, str) or not value:
            raise ApiError(
                400, "invalid.value", "value is required", [FieldProblem("value", "required")]
            )
        if kind == "ExternalId":
            source = body.get("externalSource")
            source_id = source.get("id") if isinstance(source, dict) else None
            if not isinstance(source_id, str) or not source_id:
                raise ApiError(
                    400,
                    "invalid.value",
                    "externalSource.id is required for ExternalId",
                    [FieldProblem("externalSource.id", "required")],
                )
            key = ("ext", f"{source_id}\x1f{value}")
        elif kind == "Phone":
            if not value.startswith("+"):
                raise ApiError(
                    400,
                    "invalid.value",
                    "Phone identifiers need + and the country code",
                    [FieldProblem("value", "must start with + and the country code")],
                )
            parsed = parse_phone(value, "US")
            key = ("phone", parsed[0] if parsed else value)
        elif kind == "Email":
            key = ("email", value.lower())
        else:
            raise ApiError(
                400,
                "invalid.value",
                f"Identifier type {kind!r} is not supported by the emulator",
                [FieldProblem("type", "ExternalId, Phone or Email")],
            )
        found = self.store.lookup(*key)
        if not found:
            raise ApiError(404, "not.found", "No contact with that identifier.")
        return found[0]

    def reverse_whitepages(self, lookup_val: str | None) -> dict[str, Any]:
        """`GET /reversewhitepageslookup?lookupVal=`: contacts by E.164 phone or e-mail (<=25)."""
        if not lookup_val:
            raise ApiError(
                400,
                "invalid.value",
                "lookupVal is required",
                [FieldProblem("lookupVal", "required")],
            )
        if "@" in lookup_val:
            contacts = self.store.lookup("email", lookup_val.lower(), limit=25)
        else:
            parsed = parse_phone(lookup_val, "US")
            contacts = self.store.lookup("phone", parsed[0], limit=25) if parsed else []
        return {"contacts": contacts}

    def scan(self, limit: int, cursor: str | None) -> dict[str, Any]:
        """`GET /scan/contacts` as a `CursorContactListing`: `cursors.after` and `nextUri` are
        present while more contacts follow."""
        now = self.clock.time()
        after = decode_cursor(cursor, now) if cursor else 0
        rows = self.store.scan(after, limit + 1)
        page = rows[:limit]
        listing: dict[str, Any] = {
            "entities": [body for _, body in page],
            "selfUri": f"{API}/scan/contacts?limit={limit}"
            + (f"&cursor={cursor}" if cursor else ""),
        }
        if len(rows) > limit:
            token = encode_cursor(page[-1][0], now)
            listing["cursors"] = {"after": token}
            listing["nextUri"] = f"{API}/scan/contacts?limit={limit}&cursor={token}"
        if cursor:
            listing["previousUri"] = f"{API}/scan/contacts?limit={limit}"
        return listing

    # --- external sources -------------------------------------------------------------------

    def _source_body(self, body: Any, source_id: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "invalid.value", "body must be an ExternalSource")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(
                400, "invalid.value", "name is required", [FieldProblem("name", "required")]
            )
        if len(name) > 200:
            raise ApiError(
                400,
                "invalid.value",
                "name is longer than 200 characters",
                [FieldProblem("name", "longer than 200 characters")],
            )
        active = body.get("active", True)
        if not isinstance(active, bool):
            raise ApiError(
                400,
                "invalid.value",
                "active must be a boolean",
                [FieldProblem("active", "boolean")],
            )
        source: dict[str, Any] = {"id": source_id, "name": name, "active": active}
        link = body.get("linkConfiguration")
        if isinstance(link, dict) and isinstance(link.get("uriTemplate"), str):
            source["linkConfiguration"] = {"uriTemplate": link["uriTemplate"]}
        source["selfUri"] = f"{API}/externalsources/{source_id}"
        return source

    def create_source(self, body: Any) -> dict[str, Any]:
        source = self._source_body(body, str(uuid.uuid4()))
        try:
            self.store.add_source(source)
        except Conflict as exc:
            raise ApiError(
                409, "conflict", str(exc), [FieldProblem("name", "must be unique")]
            ) from None
        return source

    def get_source(self, source_id: str) -> dict[str, Any]:
        source = self.store.get_source(source_id)
        if source is None:
            raise _not_found("external source", source_id)
        return source

    def update_source(self, source_id: str, body: Any) -> dict[str, Any]:
        source = self._source_body(body, source_id)
        try:
            if not self.store.replace_source(source):
                raise _not_found("external source", source_id)
        except Conflict as exc:
            raise ApiError(
                409, "conflict", str(exc), [FieldProblem("name", "must be unique")]
            ) from None
        return source

    def delete_source(self, source_id: str) -> None:
        if not self.store.delete_source(source_id):
            raise _not_found("external source", source_id)

    def list_sources(
        self, name: str | None, active: bool | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """`CursorExternalSourceListing`, filtered by name prefix and active flag."""
        now = self.clock.time()
        after = decode_cursor(cursor, now) if cursor else 0
        rows = self.store.list_sources(name, active, after, limit + 1)
        page = rows[:limit]
        listing: dict[str, Any] = {
            "entities": [s for _, s in page],
            "selfUri": f"{API}/externalsources",
        }
        if len(rows) > limit:
            token = encode_cursor(page[-1][0], now)
            listing["cursors"] = {"after": token}
            listing["nextUri"] = f"{API}/externalsources?limit={limit}&cursor={token}"
        return listing

    # --- contact schemas --------------------------------------------------------------------

    def _schema_body(self, body: Any, schema_id: str, version: int, created: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "invalid.value", "body must be a DataSchema")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(
                400, "invalid.value", "name is required", [FieldProblem("name", "required")]
            )
        document = body.get("jsonSchema")
        problems = validate_schema_document(document)
        if problems:
            raise invalid(problems).to_api_error()
        assert isinstance(document, dict)
        return {
            "id": schema_id,
            "name": name,
            "version": version,
            "appliesTo": ["CONTACT"],
            "enabled": bool(body.get("enabled", True)),
            "dateCreated": created,
            "jsonSchema": {**document, "id": f"{API}/contacts/schemas/{schema_id}"},
            "selfUri": f"{API}/contacts/schemas/{schema_id}",
        }

    def create_schema(self, body: Any) -> dict[str, Any]:
        schema = self._schema_body(body, str(uuid.uuid4()), 1, iso(self.clock.time()))
        self.store.add_schema(schema)
        return schema

    def get_schema(self, schema_id: str, version: int | None = None) -> dict[str, Any]:
        schema = self.store.get_schema(schema_id, version)
        if schema is None:
            raise _not_found("schema", schema_id)
        return schema

    def list_schemas(self) -> dict[str, Any]:
        schemas = self.store.list_schemas()
        return {"total": len(schemas), "entities": schemas, "selfUri": f"{API}/contacts/schemas"}

    def schema_versions(self, schema_id: str) -> dict[str, Any]:
        versions = self.store.schema_versions(schema_id)
        if not versions:
            raise _not_found("schema", schema_id)
        return {"total": len(versions), "entities": versions}

    def update_schema(self, schema_id: str, body: Any) -> dict[str, Any]:
        """PUT needs the current `version`; the stored schema gets `version + 1`."""
        current = self.get_schema(schema_id)
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, int) or isinstance(version, bool):
            raise ApiError(
                400,
                "invalid.value",
                "version (the current one) is required",
                [FieldProblem("version", "required")],
            )
        schema = self._schema_body(body, schema_id, version + 1, current["dateCreated"])
        try:
            self.store.new_schema_version(schema, version)
        except Conflict as exc:
            raise ApiError(
                409,
                "conflict",
                f"Schema version mismatch: {exc}",
                [FieldProblem("version", "not the current version")],
            ) from None
        return schema


def _not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not.found", f"The {what} {ident} was not found.")


def _missing_item(contact_id: str) -> EntityError:
    return EntityError(404, "not.found", f"The contact {contact_id} was not found.")


def _ok(contact_id: str, entity: dict[str, Any]) -> dict[str, Any]:
    return {"id": contact_id, "success": True, "status": 200, "entity": entity}


def _failed(contact_id: str | None, error: EntityError, entity: Any = None) -> dict[str, Any]:
    """A failed bulk item. `error.entity` echoes the entity as sent (the SDK model has the
    field), so a client can match a failed add by its ExternalId even though it has no id."""
    body = error.bulk_error()
    if isinstance(entity, dict):
        body["entity"] = _without_nulls(entity)
    result: dict[str, Any] = {"success": False, "status": error.status, "error": body}
    if contact_id:
        result["id"] = contact_id
    return result


def _without_nulls(value: Any) -> Any:
    """`value` with JSON nulls removed at every depth (the SDK cannot read null enums)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


_PATCH_ACTIONS = (
    "UpdateIfEmpty",
    "UpdateIfExists",
    "Update",
    "AppendToCollection",
    "Remove",
    "RemoveFromCollection",
)


def _apply_patch(contact: dict[str, Any], change: Any, where: str) -> None:
    """Apply one `ContactsPatchChange` to `contact` in place. Paths are `$.a.b` object paths."""
    if not isinstance(change, dict):
        raise ApiError(
            400, "invalid.value", f"{where} must be an object", [FieldProblem(where, "object")]
        )
    path, action, value = change.get("field"), change.get("action"), change.get("value")
    if action not in _PATCH_ACTIONS:
        raise ApiError(
            400,
            "invalid.value",
            f"{where}.action must be one of {', '.join(_PATCH_ACTIONS)}",
            [FieldProblem(f"{where}.action", "unknown action")],
        )
    if not isinstance(path, str) or not path.startswith("$.") or len(path) < 3:
        raise ApiError(
            400,
            "invalid.value",
            f"{where}.field must be a path like $.firstName",
            [FieldProblem(f"{where}.field", "must start with $.")],
        )
    parts = path[2:].split(".")
    parent: dict[str, Any] = contact
    for part in parts[:-1]:
        child = parent.get(part)
        if not isinstance(child, dict):
            if action in ("Remove", "RemoveFromCollection", "UpdateIfExists"):
                return
            child = {}
            parent[part] = child
        parent = child
    leaf = parts[-1]
    current = parent.get(leaf)
    if action == "Update":
        parent[leaf] = value
    elif action == "UpdateIfEmpty":
        if current in (None, "", [], {}):
            parent[leaf] = value
    elif action == "UpdateIfExists":
        if current not in (None, "", [], {}):
            parent[leaf] = value
    elif action == "Remove":
        parent.pop(leaf, None)
    elif action == "AppendToCollection":
        items = list(current) if isinstance(current, list) else []
        items.extend(value if isinstance(value, list) else [value])
        parent[leaf] = items
    elif action == "RemoveFromCollection" and isinstance(current, list):
        drop = value if isinstance(value, list) else [value]
        parent[leaf] = [item for item in current if item not in drop]
