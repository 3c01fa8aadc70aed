"""The emulated org: operations on contacts, sources, schemas, identifiers, merges and tokens,
plus the request log and counters. `create_app` puts one `Emulator` behind HTTP
(`app.state.emulator`); tests use it directly to read what the org holds (`all_contacts`), what
happened (`requests`, `stats`, `rate_usage`), to change faults, limits and realism at runtime,
and to act as the platform's other users (`merge_contacts`, `run_foreign_writer`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import random
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from crm_genesys.emulator.config import (
    Division,
    EmulatorConfig,
    FaultConfig,
    RealismConfig,
    SchemaLimits,
)
from crm_genesys.emulator.consistency import IndexLag
from crm_genesys.emulator.errors import ApiError, EntityError, FieldProblem, invalid
from crm_genesys.emulator.foreign import ForeignEdit, ForeignWriter, interaction_contacts
from crm_genesys.emulator.merge import (
    MAX_MERGE_SET,
    MergeError,
    by_recency,
    merged_away,
    merged_body,
    merged_type,
    survivor_merge_fields,
)
from crm_genesys.emulator.patch import apply_patch
from crm_genesys.emulator.ratelimit import RateLimiter, SecondUsage
from crm_genesys.emulator.store import ClaimConflict, Conflict, ContactRecord, Prepare, Store
from crm_genesys.emulator.validation import (
    PHONE_FIELDS,
    ContactValidator,
    claim_key,
    parse_identifier,
    parse_phone,
    schema_limit_problems,
    type_change_problems,
    validate_schema_document,
)

API = "/api/v2/externalcontacts"
CURSOR_TTL_S = 24 * 3600
# Server-owned fields an update keeps from the stored contact.
_KEPT_ON_UPDATE = (
    "division",
    "createDate",
    "type",
    "selfUri",
    "externalDataSources",
    "canonicalContact",
    "mergeSet",
    "mergedFrom",
)


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


def new_contact_id() -> str:
    """A fresh contact id: a GUID laid out as UUID version 7 (RFC 9562), its first 48 bits the
    time in milliseconds and 74 random bits after, so ids made in a later millisecond sort
    later and each insert into the id index lands on its last page, not on a random one."""
    millis = time.time_ns() // 1_000_000 & (1 << 48) - 1
    rand = secrets.randbits(74)
    value = millis << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    return str(uuid.UUID(int=value))


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
        self.index_lag = IndexLag(config.realism)
        self.store = Store(config.db_path, self.index_lag)
        self.faults: FaultConfig = config.faults
        self.limiter = RateLimiter(config.rate_limit_per_minute, config.clock)
        self.validator = ContactValidator(self.store.source_exists, self._schema_document)
        self.org_id = config.org_id or self.store.org_id()
        self._request_numbers = itertools.count(1)
        self._lookups = itertools.count(1)
        self._log: deque[RequestLogEntry] = deque(maxlen=config.request_log_size)
        self._counters: Counter[str] = Counter()
        self._log_lock = threading.Lock()
        self._foreign_edits: list[ForeignEdit] = []
        self.set_realism(config.realism)
        self._seed_org()

    # --- settings at runtime ----------------------------------------------------------------

    @property
    def realism(self) -> RealismConfig:
        return self.config.realism

    def set_faults(self, faults: FaultConfig) -> None:
        self.faults = faults

    def set_realism(self, realism: RealismConfig) -> None:
        """Behave per `realism` from now on (writes already indexed keep their lag)."""
        self.config.realism = realism
        self.index_lag.configure(realism)
        self.store.exclusive_claims = realism.exclusive_identifier_claims
        self.validator.reformat_phone_display = realism.reformat_phone_display
        self.limiter.set_background(
            self.config.client_id,
            realism.background_share,
            seed=realism.seed,
            jitter=realism.background_jitter,
        )

    def set_rate_limit(self, per_minute: int) -> None:
        if per_minute < 1:
            raise ValueError("rate limit must be >= 1")
        self.config.rate_limit_per_minute = per_minute
        self.limiter.limit = per_minute

    def rate_key(self, token: str, client_id: str) -> str:
        """Whose budget a request of `token` (a token of `client_id`) spends."""
        return client_id if self.realism.rate_limit_scope == "client" else token

    def rate_usage(self) -> list[SecondUsage]:
        """Requests and 429s per second, ours and the background consumer's."""
        return self.limiter.usage()

    def settings(self) -> dict[str, Any]:
        return {
            "rate_limit_per_minute": self.config.rate_limit_per_minute,
            "max_bulk_entities": self.config.max_bulk_entities,
            "token_ttl_s": self.config.token_ttl_s,
            "max_request_bytes": self.config.max_request_bytes,
            "seed": self.config.seed,
            "realism": self.realism.to_dict(),
            "schema_limits": self.config.schema_limits.to_dict(),
            "divisions": [{"id": d.id, "name": d.name} for d in self.config.divisions],
        }

    def update_settings(self, changes: dict[str, Any]) -> None:
        """Apply a JSON object of settings (keys as `settings()` returns them); `realism` is a
        profile name plus knobs, `schema_limits` knobs, `divisions` the whole list."""
        for key, value in changes.items():
            if key == "rate_limit_per_minute":
                self.set_rate_limit(int(value))
            elif key in ("max_bulk_entities", "token_ttl_s", "max_request_bytes", "seed"):
                if int(value) < (0 if key == "seed" else 1):
                    raise ValueError(f"{key} out of range")
                setattr(self.config, key, int(value))
            elif key == "realism":
                self.set_realism(RealismConfig.from_dict(_object(key, value)))
            elif key == "schema_limits":
                current = self.config.schema_limits.to_dict()
                self.config.schema_limits = SchemaLimits.from_dict(
                    {**current, **_object(key, value)}
                )
            elif key == "divisions":
                if not isinstance(value, list) or not all(isinstance(d, dict) for d in value):
                    raise ValueError("divisions must be a list of {id, name}")
                divisions = tuple(Division(str(d["id"]), str(d["name"])) for d in value)
                if not divisions or len({d.id for d in divisions}) != len(divisions):
                    raise ValueError("divisions: at least the home division, ids unique")
                self.config.divisions = divisions
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
        """Forget the org's data (all but its id; the org is then seeded again as configured)
        and/or the request log, counters, foreign edits and rate-limit windows."""
        if data:
            self.store.reset()
            self._seed_org()
        if log:
            with self._log_lock:
                self._log.clear()
                self._counters.clear()
                self._foreign_edits.clear()
            self.limiter.reset()

    def all_contacts(self) -> list[dict[str, Any]]:
        """Every live contact as a read by id returns it, oldest first (merged-away contacts
        are not live; `get_unresolved` shows them)."""
        return self.store.all_contacts()

    def _seed_org(self) -> None:
        """A new org holds contacts made by interactions (realism `interaction_contacts`)."""
        count = self.realism.interaction_contacts
        if count and self.store.first_time("interaction_contacts"):
            self.seed_interaction_contacts(count, self.realism.seed)

    def seed_interaction_contacts(self, count: int, seed: int) -> list[dict[str, Any]]:
        """Add `count` Ephemeral and Identified contacts, as interactions leave them (seeded)."""
        now = self.clock.time()
        contacts = []
        for kind, body in interaction_contacts(count, random.Random(f"interactions:{seed}")):
            fields = self._validate(body)
            contacts.append(self._new_contact(fields, iso(now), kind))
        stored = self.store.add_contacts(contacts, now)
        return [c for c in stored if isinstance(c, dict)]

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

    # --- the org --------------------------------------------------------------------------

    def token_info(self, client_id: str) -> dict[str, Any]:
        org = {"id": self.org_id, "name": self.config.org_name}
        return {
            "organization": org,
            "homeOrganization": org,
            "authorizedScope": [],
            "OAuthClient": {"id": client_id, "name": client_id, "organization": org},
        }

    def organization(self) -> dict[str, Any]:
        """`GET /api/v2/organizations/me`: the SDK's `Organization`."""
        name = self.config.org_name
        return {
            "id": self.org_id,
            "name": name,
            "defaultLanguage": "en",
            "defaultCountryCode": "US",
            "thirdPartyOrgName": "".join(c for c in name.lower() if c.isalnum()) or "emulator",
            "domain": "emulator.invalid",
            "version": 1,
            "state": "active",
            "productPlatform": "GenesysCloud",
            "features": {},
            "selfUri": f"/api/v2/organizations/{self.org_id}",
        }

    def divisions(self, page_size: int, page_number: int) -> dict[str, Any]:
        """`GET /api/v2/authorization/divisions`: an `AuthzDivisionEntityListing`."""
        home = self.config.divisions[0].id
        every = [
            {**d.ref(), "description": "", "homeDivision": d.id == home}
            for d in self.config.divisions
        ]
        page = every[(page_number - 1) * page_size : page_number * page_size]
        base = "/api/v2/authorization/divisions"
        pages = max(1, -(-len(every) // page_size))
        return {
            "entities": page,
            "pageSize": page_size,
            "pageNumber": page_number,
            "total": len(every),
            "pageCount": pages,
            "firstUri": f"{base}?pageSize={page_size}&pageNumber=1",
            "lastUri": f"{base}?pageSize={page_size}&pageNumber={pages}",
            "selfUri": f"{base}?pageSize={page_size}&pageNumber={page_number}",
        }

    def _division_of_new(self, requested: Any) -> dict[str, Any]:
        """The division a new contact gets: the home division unless one is asked for; an
        unknown one is refused when divisions are strict (kept as sent otherwise)."""
        if requested is None:
            return self.config.divisions[0].ref()
        division_id = requested.get("id") if isinstance(requested, dict) else None
        known = {d.id: d for d in self.config.divisions}
        if division_id in known:
            return known[division_id].ref()
        if self.realism.strict_divisions:
            raise EntityError(
                400,
                "invalid.value",
                f"The division {division_id} does not exist in this organization.",
                [FieldProblem("division.id", "no such division", str(division_id))],
            )
        return dict(requested) if isinstance(requested, dict) else requested

    # --- contacts ---------------------------------------------------------------------------

    def _schema_document(self, schema_id: str, version: int) -> dict[str, Any] | None:
        schema = self.store.get_schema(schema_id, version)
        return schema.get("jsonSchema") if schema else None

    def _validate(self, body: Any) -> dict[str, Any]:
        return self.validator.validate(body)

    def _new_contact(
        self, fields: dict[str, Any], now: str, contact_type: str = "Curated"
    ) -> dict[str, Any]:
        """A new contact's body: server id, division, type and dates; `EntityError` when its
        division is refused."""
        contact_id = new_contact_id()
        body = dict(fields)
        body["id"] = contact_id
        body["division"] = self._division_of_new(fields.get("division"))
        if "identifiers" in body:
            body["identifiers"] = [{**i, "dateCreated": now} for i in body["identifiers"]]
        body["type"] = contact_type
        body["createDate"] = now
        body["modifyDate"] = now
        body["selfUri"] = f"{API}/contacts/{contact_id}"
        return body

    def _updater(self, now: str) -> Prepare:
        """How an update makes the stored body from the stored one and the validated fields:
        a full replacement that keeps the server-owned fields (a division change is refused
        when divisions are strict), the claim dates of identifiers kept and the `userInput` of
        phones sent back unchanged."""

        def prepare(
            seq: int | None, old: dict[str, Any] | None, fields: dict[str, Any]
        ) -> dict[str, Any]:
            assert old is not None
            requested = fields.get("division")
            current = (old.get("division") or {}).get("id")
            if self.realism.strict_divisions and requested is not None:
                wanted = requested.get("id") if isinstance(requested, dict) else requested
                if wanted != current:
                    raise EntityError(
                        400,
                        "invalid.value",
                        f"A contact cannot change division (it is in {current}, the update asks "
                        f"for {wanted}): delete it and create it in the new division.",
                        [FieldProblem("division.id", "a contact cannot change division")],
                    )
            body = dict(fields)
            body["id"] = old["id"]
            for kept in _KEPT_ON_UPDATE:
                if kept in old:
                    body[kept] = old[kept]
                else:
                    body.pop(kept, None)
            for slot in PHONE_FIELDS:
                phone, was = body.get(slot), old.get(slot)
                # A phone sent back as it was read keeps what was typed in originally.
                if phone and was and phone["display"] == was.get("display") and "userInput" in was:
                    body[slot] = {**phone, "userInput": was["userInput"]}
            if "identifiers" in body:
                claimed = {claim_key(i): i.get("dateCreated") for i in old.get("identifiers", ())}
                body["identifiers"] = [
                    {**i, "dateCreated": claimed.get(claim_key(i)) or now}
                    for i in body["identifiers"]
                ]
            body["modifyDate"] = now
            return body

        return prepare

    def create_contact(self, body: Any) -> dict[str, Any]:
        try:
            contact = self._new_contact(self._validate(body), iso(self.clock.time()))
        except EntityError as exc:
            raise exc.to_api_error() from None
        (stored,) = self.store.add_contacts([contact], self.clock.time())
        if isinstance(stored, Exception):
            raise _write_error(stored).to_api_error()
        self.count("contacts_added")
        return stored

    def _resolve(self, record: ContactRecord | None) -> dict[str, Any] | None:
        """What a read by id answers for a stored record: the contact; for one merged away,
        the contact it was merged into when merged reads resolve, else nothing (404)."""
        if record is None:
            return None
        if record.merged_into is None:
            return record.body
        if self.realism.merged_read == "canonical":
            survivor = self.store.get_contact(record.merged_into)
            return survivor.body if survivor is not None and survivor.merged_into is None else None
        return None

    def get_contact(self, contact_id: str) -> dict[str, Any]:
        contact = self._resolve(self.store.get_contact(contact_id))
        if contact is None:
            raise _not_found("contact", contact_id)
        return contact

    def get_unresolved(self, contact_id: str) -> dict[str, Any]:
        """`GET /contacts/{id}/unresolved`: the contact as stored, merged away or not."""
        record = self.store.get_contact(contact_id)
        if record is None:
            raise _not_found("contact", contact_id)
        return record.body

    def _live(self, contact_id: str) -> dict[str, Any]:
        record = self.store.get_contact(contact_id)
        if record is None or record.merged_into is not None:
            raise _not_found("contact", contact_id)
        return record.body

    def update_contact(self, contact_id: str, body: Any) -> dict[str, Any]:
        """PUT: full update of a live contact (404 when missing or merged away: no upsert)."""
        if isinstance(body, dict) and body.get("id") not in (None, contact_id):
            raise ApiError(
                400,
                "invalid.value",
                "The id in the body does not match the path",
                [FieldProblem("id", "does not match the path")],
            )
        try:
            fields = self._validate(body)
        except EntityError as exc:
            raise exc.to_api_error() from None
        now = self.clock.time()
        updated = self.store.replace_contacts([(contact_id, fields)], now, self._updater(iso(now)))
        contact = updated.get(contact_id)
        if contact is None:
            raise _not_found("contact", contact_id)
        if isinstance(contact, Exception):
            raise _write_error(contact).to_api_error()
        self.count("contacts_updated")
        return contact

    def patch_contact(self, contact_id: str, body: Any) -> dict[str, Any]:
        """PATCH {changes: [{field: "$.a.b", value, action}]}, applied in order, then validated."""
        current = self._live(contact_id)
        changes = body.get("changes") if isinstance(body, dict) else None
        if not isinstance(changes, list) or not changes:
            raise ApiError(
                400, "invalid.value", "changes are required", [FieldProblem("changes", "required")]
            )
        for i, change in enumerate(changes):
            apply_patch(current, change, f"changes[{i}]")
        return self.update_contact(contact_id, current)

    def delete_contact(self, contact_id: str) -> None:
        if not self.store.delete_contacts([contact_id]):
            raise _not_found("contact", contact_id)
        self.count("contacts_removed")

    # --- identifiers ------------------------------------------------------------------------

    def list_identifiers(self, contact_id: str) -> dict[str, Any]:
        """`GET /contacts/{id}/identifiers`: a `ContactIdentifierListing`."""
        return {"entities": list(self._live(contact_id).get("identifiers", ()))}

    def claim_identifier(self, contact_id: str, body: Any) -> dict[str, Any]:
        """`PATCH /contacts/{id}/identifiers` (`IdentifierClaimRequest`): `Claim` adds the
        identifier (409 when another contact holds an exclusive claim on it), `Release` drops it
        (404 when the contact does not hold it). Returns the `ContactIdentifier`."""
        operation = body.get("operation") if isinstance(body, dict) else None
        if operation not in ("Claim", "Release"):
            raise ApiError(
                400,
                "invalid.value",
                "operation must be Claim or Release",
                [FieldProblem("operation", "Claim or Release")],
            )
        try:
            identifier = parse_identifier(body.get("identifier"), self.store.source_exists)
        except EntityError as exc:
            raise exc.to_api_error() from None
        key = claim_key(identifier)
        contact = self._live(contact_id)
        held = [i for i in contact.get("identifiers", ()) if claim_key(i) != key]
        mine = [i for i in contact.get("identifiers", ()) if claim_key(i) == key]
        if operation == "Release":
            if not mine:
                raise ApiError(
                    404, "not.found", f"The contact {contact_id} does not hold that identifier."
                )
            contact["identifiers"] = held
            self.update_contact(contact_id, contact)
            return mine[0]
        if mine:
            return mine[0]
        contact["identifiers"] = [*held, identifier]
        updated = self.update_contact(contact_id, contact)
        return next(i for i in updated["identifiers"] if claim_key(i) == key)

    # --- merges -----------------------------------------------------------------------------

    def merge_contacts(
        self,
        contact_ids: Sequence[str],
        into: str | None = None,
        value_override: Any = None,
    ) -> dict[str, Any]:
        """Merge contacts as the platform does (see `merge.py`). With `into`, the others are
        merged into that existing contact (the admin merge: `into` survives); without, all of
        them into a new contact (`POST /contacts/merge`). Merged-away ids then answer 404 to
        updates (and to reads, unless merged reads resolve). Returns the survivor."""
        ids = list(dict.fromkeys(contact_ids))
        if into is not None:
            ids = [i for i in ids if i != into]
        members = ids + ([into] if into is not None else [])
        if not ids or len(members) < 2 or len(members) > MAX_MERGE_SET:
            raise ApiError(
                400,
                "invalid.value",
                f"A merge takes 2 to {MAX_MERGE_SET} distinct contacts.",
                [FieldProblem("contactIds", f"2 to {MAX_MERGE_SET} contact ids")],
            )
        contacts = {cid: self._live(cid) for cid in members}
        divisions = {(c.get("division") or {}).get("id") for c in contacts.values()}
        if len(divisions) > 1:
            raise ApiError(
                400,
                "invalid.value",
                "Contacts of different divisions cannot be merged.",
                [FieldProblem("contactIds", "contacts of one division")],
            )
        now = self.clock.time()
        stamp = iso(now)
        merged = [contacts[i] for i in ids]
        if into is not None:
            base, others = contacts[into], by_recency(merged)
        else:
            base, *others = by_recency(merged)
        try:
            fields = merged_body(base, others)
        except MergeError as exc:
            raise ApiError(400, "invalid.value", f"Cannot merge: {exc}.") from None
        if value_override is not None:
            try:
                override = self._validate(value_override)
            except EntityError as exc:
                raise exc.to_api_error() from None
            fields.update({k: v for k, v in override.items() if k != "division"})
        if into is not None:
            survivor = self._updater(stamp)(None, base, fields)
        else:
            survivor = self._new_contact(fields, stamp)
            survivor["division"] = base.get("division", survivor["division"])
        survivor["type"] = merged_type(list(contacts.values()))
        survivor_merge_fields(survivor, merged)
        away = [merged_away(c, survivor["id"], stamp) for c in merged]
        try:
            self.store.merge(survivor, into is None, away, now)
        except ClaimConflict as exc:
            raise _write_error(exc).to_api_error() from None
        except Conflict as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        self.count("contacts_merged", len(merged))
        return survivor

    # --- foreign writers --------------------------------------------------------------------

    def run_foreign_writer(
        self,
        seed: int,
        edits: int = 10,
        merges: int = 0,
        kinds: Sequence[str] | None = None,
        interactions: int = 0,
    ) -> list[ForeignEdit]:
        """Act as the org's other users between two runs of the sync (see `foreign.py`):
        `edits` contacts edited in fields the sync does not own, `merges` groups of duplicates
        merged, `interactions` new Ephemeral/Identified contacts. Returns exactly what changed
        (also kept for `foreign_edits`)."""
        done = ForeignWriter(self, random.Random(f"foreign:{seed}")).run(
            edits, merges, kinds, interactions
        )
        with self._log_lock:
            self._foreign_edits.extend(done)
        return done

    def foreign_edits(self) -> list[ForeignEdit]:
        """Every edit the foreign writer made since the last reset, oldest first."""
        with self._log_lock:
            return list(self._foreign_edits)

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
        now = self.clock.time()
        stamp = iso(now)
        results: list[tuple[int, dict[str, Any]]] = []
        new: list[tuple[int, Any, dict[str, Any]]] = []
        injected = 0
        validator = self.validator.for_one_request()
        for index, entity in enumerate(entities):
            failure = self._item_failure(rng)
            if failure is not None:
                injected += 1
                results.append((index, _failed(None, failure, entity)))
                continue
            try:
                new.append((index, entity, self._new_contact(validator.validate(entity), stamp)))
            except EntityError as exc:
                results.append((index, _failed(None, exc, entity)))
        stored = self.store.add_contacts([c for _, _, c in new], now)
        added = 0
        for (index, entity, _), outcome in zip(new, stored, strict=True):
            if isinstance(outcome, Exception):
                results.append((index, _failed(None, _write_error(outcome), entity)))
            else:
                added += 1
                results.append((index, _ok(outcome["id"], outcome)))
        self.count("contacts_added", added)
        return self._bulk_response(results, rng), injected

    def bulk_update(self, body: Any, rng: random.Random) -> tuple[dict[str, Any], int]:
        """`/bulk/contacts/update`: entities carry `id`; a missing or merged-away contact is a
        404 item, a refused one (division change, claimed identifier) a 400/409 item."""
        entities = self._bulk_entities(body)
        results: list[tuple[int, dict[str, Any]]] = []
        pending: list[tuple[int, str, dict[str, Any], Any]] = []
        injected = 0
        validator = self.validator.for_one_request()
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
                pending.append((index, contact_id, validator.validate(entity), entity))
            except EntityError as exc:
                results.append((index, _failed(contact_id, exc, entity)))
        now = self.clock.time()
        updated = self.store.replace_contacts(
            [(cid, fields) for _, cid, fields, _ in pending], now, self._updater(iso(now))
        )
        done = 0
        for index, contact_id, _, entity in pending:
            contact = updated.get(contact_id)
            if contact is None:
                results.append((index, _failed(contact_id, _missing_item(contact_id))))
            elif isinstance(contact, Exception):
                results.append((index, _failed(contact_id, _write_error(contact), entity)))
            else:
                done += 1
                results.append((index, _ok(contact_id, contact)))
        self.count("contacts_updated", done)
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

    def bulk_fetch(
        self, body: Any, rng: random.Random, *, unresolved: bool = False
    ) -> dict[str, Any]:
        """`/bulk/contacts` {entities: [{id}]}: the contacts as reads by id answer (a 404 item
        for each missing or, unless merged reads resolve, merged-away one).
        `/bulk/contacts/unresolved` (`unresolved`): the contacts as stored."""
        entities = self._bulk_entities(body)
        ids = [e.get("id") if isinstance(e, dict) else None for e in entities]
        records = self.store.get_contacts([i for i in ids if isinstance(i, str)])
        results: list[tuple[int, dict[str, Any]]] = []
        for index, contact_id in enumerate(ids):
            if not isinstance(contact_id, str):
                results.append((index, _failed(None, invalid([FieldProblem("id", "required")]))))
                continue
            record = records.get(contact_id)
            found = record.body if unresolved and record else self._resolve(record)
            if found is not None:
                results.append((index, _ok(found["id"], found)))
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

    # --- lookups, search and scan (the lagging index) ---------------------------------------

    def _hits(self, kind: str, key: str) -> list[dict[str, Any]]:
        """The live contacts the index holds under a key now, oldest first. A hit merged away
        since it was indexed is dropped, or followed to its survivor (realism knob)."""
        out: dict[str, dict[str, Any]] = {}
        for record in self.store.lookup(kind, key, self.clock.time()):
            if record.merged_into is None:
                out.setdefault(record.body["id"], record.body)
            elif self.realism.stale_hits_follow_merges:
                survivor = self.store.get_contact(record.merged_into)
                if survivor is not None and survivor.merged_into is None:
                    out.setdefault(survivor.body["id"], survivor.body)
        return list(out.values())

    def _ordered(self, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Duplicate hits in the order the realism profile gives them."""
        order = self.realism.duplicate_lookup_order
        if order == "newest" or len(hits) < 2:
            return hits[::-1] if order == "newest" else hits
        if order == "random":
            shuffled = list(hits)
            random.Random(f"lookup:{self.realism.seed}:{next(self._lookups)}").shuffle(shuffled)
            return shuffled
        return hits

    def identifier_lookup(self, body: Any) -> dict[str, Any]:
        """`POST /identifierlookup/contacts` (`ContactIdentifier`); 404 on a miss. A contact
        claiming the identifier comes first; then contacts carrying it in their fields
        (ExternalIds, phones, e-mails), the one the realism profile picks when several do."""
        if not isinstance(body, dict):
            raise ApiError(400, "invalid.value", "body must be a ContactIdentifier")
        try:
            identifier = parse_identifier(
                {k: v for k, v in body.items() if k in ("type", "value", "externalSource")},
                lambda _source: True,
            )
        except EntityError as exc:
            raise exc.to_api_error() from None
        kind, value = identifier["type"], identifier["value"]
        claimed = self._hits("claim", claim_key(identifier))
        if claimed:
            return claimed[0]
        if kind == "ExternalId":
            field = ("ext", f"{identifier['externalSource']['id']}\x1f{value}")
        elif kind == "Phone":
            field = ("phone", value)
        elif kind == "Email":
            field = ("email", value.lower())
        else:
            raise ApiError(404, "not.found", "No contact with that identifier.")
        found = self._ordered(self._hits(*field))
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
            contacts = self._hits("email", lookup_val.lower())
        else:
            parsed = parse_phone(lookup_val, "US")
            contacts = self._hits("phone", parsed.e164) if parsed else []
        return {"contacts": self._ordered(contacts)[:25]}

    def scan(self, limit: int, cursor: str | None) -> dict[str, Any]:
        """`GET /scan/contacts` as a `CursorContactListing`: `cursors.after` and `nextUri` are
        present while more contacts follow. Lists the contacts the index knows now."""
        now = self.clock.time()
        after = decode_cursor(cursor, now) if cursor else 0
        rows = self.store.scan(after, limit + 1, now)
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

    def search(self, q: str | None, page_size: int, page_number: int) -> dict[str, Any]:
        """`GET /contacts?q=&pageSize=&pageNumber=`: a `ContactListing` of the contacts the
        index knows now whose names, e-mails or phones contain `q` (case-insensitive)."""
        if page_size * page_number > 1000:
            raise ApiError(
                400,
                "invalid.value",
                "pageSize * pageNumber must be at most 1000",
                [FieldProblem("pageNumber", "pageSize * pageNumber <= 1000")],
            )
        needle = (q or "").lower()
        matches = [
            body
            for _, body in self.store.scan(0, 1_000_000, self.clock.time())
            if not needle or needle in _searchable(body)
        ]
        start = (page_number - 1) * page_size
        pages = max(1, -(-len(matches) // page_size))
        base = f"{API}/contacts?pageSize={page_size}"
        return {
            "entities": matches[start : start + page_size],
            "pageSize": page_size,
            "pageNumber": page_number,
            "total": len(matches),
            "pageCount": pages,
            "firstUri": f"{base}&pageNumber=1",
            "lastUri": f"{base}&pageNumber={pages}",
            "selfUri": f"{base}&pageNumber={page_number}",
        }

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

    def schema_limits(self) -> dict[str, Any]:
        """`GET /contacts/schemas/limits`: the org's `SchemaQuantityLimits`."""
        return self.config.schema_limits.body()

    def _check_limits(self, schema: dict[str, Any], current: dict[str, Any] | None) -> None:
        """With schema limits enforced: 400 when `schema` exceeds them, when a new schema would
        be one too many, or when an update (`current` is the stored version) changes the type
        of a field."""
        if not self.realism.enforce_schema_limits:
            return
        limits = self.config.schema_limits
        others = [s for s in self.store.list_schemas() if s["id"] != schema["id"]]
        if current is None and len(others) >= limits.max_number_of_schemas_per_org:
            raise ApiError(
                400,
                "invalid.value",
                f"The organization has its {limits.max_number_of_schemas_per_org} schemas already.",
                [FieldProblem("name", "too many schemas")],
            )
        elsewhere = sum(len(s["jsonSchema"].get("properties") or {}) for s in others)
        problems = schema_limit_problems(schema["name"], schema["jsonSchema"], limits, elsewhere)
        if current is not None:
            problems += type_change_problems(current["jsonSchema"], schema["jsonSchema"])
        if problems:
            raise invalid(problems).to_api_error()

    def create_schema(self, body: Any) -> dict[str, Any]:
        schema = self._schema_body(body, str(uuid.uuid4()), 1, iso(self.clock.time()))
        self._check_limits(schema, None)
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
        self._check_limits(schema, current)
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


def _object(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object")
    return value


def _write_error(exc: Exception) -> EntityError:
    """The item error for a write the store refused."""
    if isinstance(exc, EntityError):
        return exc
    if isinstance(exc, ClaimConflict):
        return EntityError(
            409,
            "identifier.conflict",
            f"An identifier of this contact is claimed by another contact ({exc.holder}).",
            [FieldProblem("identifiers", "claimed by another contact")],
        )
    return EntityError(409, "conflict", str(exc))


def _searchable(contact: dict[str, Any]) -> str:
    """The text a contact search (`q`) matches: names, e-mails and phones, lower case."""
    parts = [str(contact.get(k, "")) for k in ("firstName", "middleName", "lastName")]
    parts += [str(contact.get(k, "")) for k in ("workEmail", "personalEmail", "otherEmail")]
    for slot in ("workPhone", "cellPhone", "homePhone", "otherPhone"):
        phone = contact.get(slot) or {}
        parts += [str(phone.get("e164", "")), str(phone.get("display", ""))]
    return "\x1f".join(parts).lower()


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
