"""A Genesys Cloud emulator: the External Contacts API as the sync uses it, in one Starlette app.

Use it in-process (`httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(config)))`,
base URL anything, e.g. `http://emulator`) or as a server (`crm-genesys emulator serve`,
`python -m crm_genesys.emulator serve --port 0`, or `server.serve(config, host, port)`). State is
SQLite (`EmulatorConfig.db_path`; None = in memory), so processes on one file share one org.
`app.state.emulator` (`Emulator`) gives tests the stored contacts, the request log, counters and
rate usage, runtime control of faults, limits and realism, and the org's other users (merges,
the foreign writer); over HTTP the same is under `/__emulator/` (admin token required, see
`admin.py`). `docs/emulator.md` describes every realism knob with its default and its source.

Two realism profiles (`RealismConfig`): `basic` (the default) and `realistic`, which picks the
harsher plausible behaviour wherever the platform leaves room: a lagging index behind lookups
and scans, 404s for merged-away contacts, strict divisions, exclusive identifier claims, a
budget per OAuth client shared with background traffic, schema limits, reformatted phone
displays, interaction contacts in the org.

Faithful (checked against the official SDK's models and the platform's documented facts):
- paths, field names and response shapes: `ExternalContact` (with its merge fields
  `canonicalContact`, `mergeSet`, `mergedFrom`, `mergedTo`), `PhoneNumber`, `ExternalSource`,
  `CursorExternalSourceListing`, `CursorContactListing`, `ContactListing`,
  `BulkContactsResponse` (per-item `{id, success, status, entity, error{code, message, status,
  retryable, details}}`, `errorCount`, `errorIndexes` into the request),
  `ReverseWhitepagesLookupResult`, `DataSchema`, `SchemaQuantityLimits`, `ContactIdentifier`,
  `ContactIdentifierListing`, `IdentifierClaimRequest`, `MergeContactsRequest`, `Organization`,
  `AuthzDivisionEntityListing`, `ErrorBody`; null fields are left out; every response is
  `application/json`;
- client-credentials tokens (Basic auth, `expires_in` default 86400), 401 when expired or revoked;
- `PUT /contacts/{id}` is a full update and 404 on a missing id (not an upsert); creates get
  server ids (a client `id` is ignored); division, createDate and type are server-owned; a
  contact cannot change division (strict divisions);
- phones: `display` read with `normalizationCountryCode`, +1 assumed when it is missing;
  `e164`, `countryCode`, `userInput` computed by the server; a number that cannot be read keeps
  its display and gets no `e164` (the SDK documents this) and is then not found by lookups;
- limits: name/title fields 1000, e-mails 256 and well-formed, address parts 200/200/100/50/25/25,
  externalSystemUrl 1000, at most 10 ExternalIds, request bodies over 512,000 bytes get 413
  (refused before they are buffered);
- custom fields typed by a contact schema version (checkbox, date, datetime, integer, number,
  enum (dropdown), identifier, text, longtext (text area), tag, url) with the platform's limits;
  schema PUT needs the current version and stores version + 1;
- merges take 2 to 25 contacts; the public merge makes a new contact whose fields come from the
  most recently modified one (the SDK's documented rule);
- rate limits with `inin-ratelimit-count/allowed/reset` headers, 429 `too.many.requests` with
  `Retry-After`.

Documented guesses (the platform does not say; kept simple and strict, see docs/emulator.md):
- bulk results come back shuffled (seeded); the platform only says the order is not guaranteed;
- a second contact with an ExternalId already in use is ACCEPTED and becomes a duplicate
  contact: the sync must protect itself (intents + ExternalId lookup). Identifier lookups then
  return the OLDEST matching contact (`realistic`: any of them, seeded);
- the index lag, its distribution and what a lagging index answers (hits hydrated from the
  primary: deleted contacts never, merged-away ones dropped);
- a merged-away id answers 404 to reads too (`merged_read` knob), the merge refusals (different
  divisions, more than 10 ExternalIds), identifier claims exclusive with 409 on a second claim,
  a release of an unheld identifier 404, an update without `identifiers` releasing them;
- the schema-limit numbers, and that a field's type cannot change;
- the phone display's international format;
- more than `max_bulk_entities` (200) entities in a bulk request: 400
  `bulk.entities.limit.exceeded`; an empty list: 400 `invalid.value`;
- the budget is a sliding 60-second window; refused requests do not count; the token endpoint
  has no budget; windows are per process; background traffic is steady and seeded;
- unknown body fields are refused with 400 (catches a client's misspelt field early);
- `PhoneNumber.countryCode` is the ISO region of the number (e.g. `US`);
- duplicate External Source names: 409 `conflict`; schema version mismatch: 409 `conflict`;
- a bulk item that succeeded reports `status` 200; remove reports no entity; a failed add or
  update echoes the entity as sent in `error.entity` (a field of the SDK model);
- injected per-item failures are 503 `service.unavailable`, `retryable: true`, not applied.

Not emulated: notes, external organizations, enrich, CSV import, identity-resolution settings,
the expiry of Ephemeral and Identified contacts, division-scoped permissions.
"""

from crm_genesys.emulator.app import EmulatorApp, create_app
from crm_genesys.emulator.clock import Clock, ManualClock, SystemClock
from crm_genesys.emulator.config import (
    DEFAULT_ADMIN_TOKEN,
    FAULT_PROFILES,
    REALISM_PROFILES,
    Division,
    EmulatorConfig,
    FaultConfig,
    RealismConfig,
    SchemaLimits,
)
from crm_genesys.emulator.emulator import Emulator, RequestLogEntry
from crm_genesys.emulator.foreign import ForeignEdit

__all__ = [
    "DEFAULT_ADMIN_TOKEN",
    "FAULT_PROFILES",
    "REALISM_PROFILES",
    "Clock",
    "Division",
    "Emulator",
    "EmulatorApp",
    "EmulatorConfig",
    "FaultConfig",
    "ForeignEdit",
    "ManualClock",
    "RealismConfig",
    "RequestLogEntry",
    "SchemaLimits",
    "SystemClock",
    "create_app",
]
