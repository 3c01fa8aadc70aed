"""The contract between the Genesys client and its callers (the sink, the CLI, Dagster resources).

The client (`crm_genesys.genesys.client.GenesysClient`) implements `ContactsApi`; the sink codes
against the protocol so that it can be tested with any implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

BulkOp = Literal["add", "update", "remove", "fetch"]
Contact = dict[str, Any]


@dataclass(frozen=True)
class BulkItemResult:
    """The outcome of one entity of a bulk request, aligned with the request by the client.

    The platform returns per-item results in no guaranteed order: the client matches successes by
    contact id / ExternalId and failures by `errorIndexes`, never by position, and hands results
    back in request order.
    """

    op: BulkOp
    success: bool
    status: int
    contact_id: str | None = None
    entity: Contact | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool = False
    # True when the request's fate is unknown (connection dropped, timeout, 5xx after sending):
    # an `add` may or may not have happened and must be resolved by ExternalId lookup, not resent.
    outcome_unknown: bool = False


class ContactsApi(Protocol):
    """What the sink needs of Genesys. All calls are paced, token-managed and retried inside.

    Whole-request refusals raise (`errors.PermanentError` subclasses); per-item outcomes come
    back as `BulkItemResult`s in request order.
    """

    @property
    def lookup_lag_seconds(self) -> float:
        """How long after a write identifier lookups can be trusted to show it (reads by id
        are immediate)."""
        ...

    async def ensure_external_source(self, name: str, uri_template: str | None = None) -> str:
        """The id of the External Source named `name`, created on first use."""
        ...

    async def bulk_add(self, entities: Sequence[Contact]) -> list[BulkItemResult]:
        """`POST /api/v2/externalcontacts/bulk/contacts/add`. Never resent when the outcome is
        unknown (that would duplicate contacts): such items come back with `outcome_unknown`."""
        ...

    async def bulk_update(self, entities: Sequence[Contact]) -> list[BulkItemResult]:
        """`POST .../bulk/contacts/update`; entities carry `id`.
        A vanished contact is a 404 item."""
        ...

    async def bulk_remove(self, contact_ids: Sequence[str]) -> list[BulkItemResult]:
        """`POST .../bulk/contacts/remove`. A 404 item is reported as success (already gone)."""
        ...

    async def bulk_fetch(self, contact_ids: Sequence[str]) -> list[BulkItemResult]:
        """`POST .../bulk/contacts`: the current contacts (item `entity`); a 404 item for a
        contact that does not exist (deleted, or merged into another)."""
        ...

    async def lookup_by_external_id(self, source_id: str, value: str) -> Contact | None:
        """`POST .../identifierlookup/contacts` with type ExternalId;
        None when no contact has it."""
        ...

    async def get_contact(self, contact_id: str) -> Contact | None: ...

    def scan_contacts(self) -> AsyncIterator[Contact]:
        """Every contact of the org, through `GET .../scan/contacts` cursors."""
        ...
