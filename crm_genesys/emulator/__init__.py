"""A Genesys Cloud emulator: the External Contacts API as the sync uses it, in one Starlette app.

Use it in-process (`httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(config)))`,
base URL anything, e.g. `http://emulator`) or as a server (`crm-genesys emulator serve`,
`python -m crm_genesys.emulator serve --port 0`, or `server.serve(config, host, port)`). State is
SQLite (`EmulatorConfig.db_path`; None = in memory), so processes on one file share one org.
`app.state.emulator` (`Emulator`) gives tests the stored contacts, the request log and counters,
and runtime control of faults and limits; over HTTP the same is under `/__emulator/`
(`requests?since=N`, `stats`, `contacts`, `faults` GET/PUT, `latency` GET/PUT, `settings`
GET/PUT, `reset` POST).

Faithful (checked against the official SDK's models and the platform's documented facts):
- paths, field names and response shapes: `ExternalContact`, `PhoneNumber`, `ExternalSource`,
  `CursorExternalSourceListing`, `CursorContactListing`, `BulkContactsResponse` (per-item
  `{id, success, status, entity, error{code, message, status, retryable, details}}`,
  `errorCount`, `errorIndexes` into the request), `ReverseWhitepagesLookupResult`, `DataSchema`,
  `ErrorBody`; null fields are left out; every response is `application/json`;
- client-credentials tokens (Basic auth, `expires_in` default 86400), 401 when expired or revoked;
- `PUT /contacts/{id}` is a full update and 404 on a missing id (not an upsert); creates get
  server ids (a client `id` is ignored); division, createDate and type are server-owned;
- phones: `display` read with `normalizationCountryCode`, +1 assumed when it is missing;
  `e164`, `countryCode`, `userInput` computed by the server; a number that cannot be read keeps
  its display and gets no `e164` (the SDK documents this) and is then not found by lookups;
- limits: name/title fields 1000, e-mails 256 and well-formed, address parts 200/200/100/50/25/25,
  externalSystemUrl 1000, at most 10 ExternalIds, request bodies over 512,000 bytes get 413;
- custom fields typed by a contact schema version (checkbox, date, datetime, integer, number,
  enum (dropdown), identifier, text, longtext (text area), tag, url) with the platform's limits;
  schema PUT needs the current version and stores version + 1;
- rate limits per token with `inin-ratelimit-count/allowed/reset` headers, 429
  `too.many.requests` with `Retry-After`.

Documented guesses (the platform does not say; kept simple and strict):
- bulk results come back shuffled (seeded); the platform only says the order is not guaranteed;
- a second contact with an ExternalId already in use is ACCEPTED and becomes a duplicate
  contact: the sync must protect itself (intents + ExternalId lookup). Identifier lookups then
  return the OLDEST matching contact;
- more than `max_bulk_entities` (200) entities in a bulk request: 400
  `bulk.entities.limit.exceeded`; an empty list: 400 `invalid.value`;
- the per-token budget is a sliding 60-second window; refused requests do not count; the token
  endpoint has no budget; windows are per process;
- unknown body fields are refused with 400 (catches a client's misspelt field early);
- `PhoneNumber.countryCode` is the ISO region of the number (e.g. `US`);
- duplicate External Source names: 409 `conflict`; schema version mismatch: 409 `conflict`;
- a bulk item that succeeded reports `status` 200; remove reports no entity; a failed add or
  update echoes the entity as sent in `error.entity` (a field of the SDK model);
- injected per-item failures are 503 `service.unavailable`, `retryable: true`, not applied.

Not emulated: divisions beyond a home division, organizations, notes, merges, identifiers
claims, enrich, CSV import, search (`/contacts?q=`, `/contacts/search`).
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
