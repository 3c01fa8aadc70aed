"""Field ownership: the parts of an External Contact the sync writes, and the merge that writes
exactly those into the contact as Genesys holds it.

The platform's updates are full replacements (a field the body leaves out is cleared), while
agents, other integrations and Genesys itself write the same contacts. So an update is built
from the current contact: `merge_contact(current, desired, ownership, ...)` sets
every owned field the CRM has, clears every owned field the CRM left blank, and keeps the rest as
it is: other ExternalIds, identifiers, unmapped phone and e-mail slots, unmapped address parts,
unmapped custom fields of the same schema, `surveyOptOut`, social ids, `externalSystemUrl`,
the division, the external organization.

What the sync owns (`Ownership`): the scalar fields, phone slots, e-mail slots, address parts
and custom fields its mapping names, the `schema` reference of a contact with custom fields,
and its own ExternalId (source id + business key). A mapping that declares
`ownership: contact` owns whole contacts: then updates are sent as built from the CRM alone.

Server-owned fields (`SERVER_OWNED`, and a phone's `e164`, `countryCode`, `userInput`) are never
sent back. Phones are compared on `e164` (+ extension): the platform rewrites `display` to an
international format, so a slot whose number did not change keeps the contact's own phone object
(and its `acceptsSMS`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from crm_genesys.contacts.mapping import (
    ADDRESS_FIELD_LIMITS,
    EMAIL_SLOTS,
    PHONE_SLOTS,
    SCALAR_FIELD_LIMITS,
)
from crm_genesys.contacts.mapping import Mapping as ContactMapping
from crm_genesys.genesys.types import Contact

OwnershipMode = Literal["fields", "contact"]

# Written by the platform, refused or ignored on write: never sent back.
SERVER_OWNED: tuple[str, ...] = (
    "id",
    "type",
    "modifyDate",
    "createDate",
    "selfUri",
    "externalDataSources",
    "canonicalContact",
    "mergeSet",
    "mergedFrom",
    "mergedTo",
    "mergeOperation",
)
PHONE_SERVER_OWNED: tuple[str, ...] = ("e164", "countryCode", "userInput")
ADDRESS_PARTS: tuple[str, ...] = tuple(ADDRESS_FIELD_LIMITS)
SCALAR_FIELDS: tuple[str, ...] = tuple(SCALAR_FIELD_LIMITS)


@dataclass(frozen=True)
class Ownership:
    """What the sync owns on a contact.

    `custom_fields` are custom field keys as Genesys knows them (`tier_enum`); None owns every
    custom field of the contact's schema (the choice when no mapping is at hand). `mode`
    `contact` owns whole contacts: no merge, no fetch.
    """

    mode: OwnershipMode = "fields"
    scalars: frozenset[str] = frozenset(SCALAR_FIELDS)
    phones: frozenset[str] = frozenset(PHONE_SLOTS)
    emails: frozenset[str] = frozenset(EMAIL_SLOTS)
    address: frozenset[str] = frozenset(ADDRESS_PARTS)
    custom_fields: frozenset[str] | None = None

    @classmethod
    def from_mapping(cls, mapping: ContactMapping) -> Ownership:
        """Exactly the fields `mapping` names, in its declared `ownership` mode."""
        return cls(
            mode=mapping.ownership,
            scalars=frozenset(mapping.fields),
            phones=frozenset(mapping.phones),
            emails=frozenset(mapping.emails),
            address=frozenset(mapping.address),
            custom_fields=frozenset(f.key for f in mapping.custom_field_list()),
        )

    @property
    def merges(self) -> bool:
        """Whether updates are merged into the current contact (which must be fetched)."""
        return self.mode == "fields"

    def owns_custom_field(self, key: str) -> bool:
        return self.custom_fields is None or key in self.custom_fields

    @property
    def owns_custom_fields(self) -> bool:
        return self.custom_fields is None or bool(self.custom_fields)

    def present(self, contact: Mapping[str, Any]) -> frozenset[str]:
        """The owned fields `contact` holds a value in, named `firstName`, `workPhone`,
        `address.city`, `customFields.tier_enum`: what an update without them would clear."""
        names = {n for n in (*self.scalars, *self.phones, *self.emails) if _filled(contact.get(n))}
        address = contact.get("address")
        if isinstance(address, Mapping):
            names.update(f"address.{p}" for p in self.address if _filled(address.get(p)))
        custom = contact.get("customFields")
        if isinstance(custom, Mapping):
            names.update(
                f"customFields.{k}"
                for k, v in custom.items()
                if self.owns_custom_field(k) and _filled(v)
            )
        return frozenset(names)

    def view(self, contact: Mapping[str, Any] | None) -> dict[str, Any]:
        """The owned fields of `contact` (a Genesys contact or a payload we send), canonical
        and without empty values, so that two views compare equal exactly when Genesys holds
        what we send: text stripped, phones on `e164` with their extension (the server
        reformats `display`), e-mails without case, only the owned address parts and custom
        fields (what others wrote there is not ours to compare)."""
        out: dict[str, Any] = {}
        if not contact:
            return out
        for name in sorted(self.scalars):
            _put(out, name, _canon(contact.get(name)))
        for name in sorted(self.phones):
            _put(out, name, _canon_phone(contact.get(name)))
        for name in sorted(self.emails):
            value = _canon(contact.get(name))
            _put(out, name, value.lower() if isinstance(value, str) else value)
        address = contact.get("address")
        if isinstance(address, Mapping):
            parts = {p: _canon(address.get(p)) for p in sorted(self.address)}
            _put(out, "address", {p: v for p, v in parts.items() if v is not None} or None)
        custom = contact.get("customFields")
        if isinstance(custom, Mapping):
            owned = {k: _canon(v) for k, v in custom.items() if self.owns_custom_field(k)}
            _put(out, "customFields", {k: v for k, v in owned.items() if v is not None} or None)
        return out


def _put(out: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        out[name] = value


def _canon(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool | int | float):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _canon_phone(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return _canon(value)
    number = _canon(value.get("e164") or value.get("display"))
    ext = value.get("extension")
    if number is None and ext in (None, ""):
        return None
    return (number, None if ext in (None, "") else str(ext))


def _filled(value: object) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def writable(contact: Mapping[str, Any]) -> Contact:
    """`contact` as it may be written back: server-owned fields dropped (also inside phones),
    references (division, external organization) reduced to their id. A deep copy."""
    out: Contact = {k: copy.deepcopy(v) for k, v in contact.items() if k not in SERVER_OWNED}
    for slot in PHONE_SLOTS:
        phone = out.get(slot)
        if isinstance(phone, dict):
            out[slot] = {k: v for k, v in phone.items() if k not in PHONE_SERVER_OWNED}
    for ref in ("division", "externalOrganization"):
        value = out.get(ref)
        if isinstance(value, dict) and value.get("id"):
            out[ref] = {"id": value["id"]}
    return out


def phone_number(phone: object) -> tuple[str, object] | None:
    """What identifies a phone: its E.164 form and its extension. The form is the server's
    `e164`, else the `display` with its formatting removed (the sync sends E.164; the platform
    displays the international format, `+49 30 123456`, of the same digits)."""
    if not isinstance(phone, Mapping):
        return None
    number = phone.get("e164") or _dialable(phone.get("display"))
    return (str(number), phone.get("extension")) if number else None


def _dialable(display: object) -> str:
    if not isinstance(display, str):
        return ""
    digits = "".join(c for c in display if c.isdigit())
    return ("+" + digits if display.lstrip().startswith("+") else digits) if digits else ""


def merge_contact(
    current: Mapping[str, Any],
    desired: Mapping[str, Any],
    ownership: Ownership,
    *,
    source_id: str,
    key: str,
    schema: Mapping[str, Any] | None = None,
) -> Contact:
    """The update body that gives `current` (the contact as Genesys holds it) the owned fields
    of `desired` (the body built from the CRM) and keeps everything else of `current`.
    `schema` is our contact schema reference (`{id, version}`), None when the sync maps no
    custom fields.

    Pure and idempotent: `merge(merge(c, d), d) == merge(c, d)`. The result carries
    `current`'s id, never a server-owned field, and our ExternalId `(source_id, key)` once;
    other ExternalIds (also other values of our source) are kept in their order.
    """
    out = writable(current)
    if current.get("id") is not None:
        out["id"] = current["id"]
    for name in ownership.scalars:
        _set_or_clear(out, name, desired.get(name))
    for slot in ownership.emails:
        _set_or_clear(out, slot, desired.get(slot))
    for slot in ownership.phones:
        wanted = desired.get(slot)
        held = current.get(slot)
        if wanted is not None and phone_number(wanted) == phone_number(held):
            continue  # the same number: keep the platform's display and acceptsSMS
        _set_or_clear(out, slot, copy.deepcopy(wanted))
    _merge_address(out, desired.get("address"), ownership.address)
    if ownership.owns_custom_fields:
        _merge_custom_fields(out, desired.get("customFields"), ownership, schema)
    out["externalIds"] = _merge_external_ids(out.get("externalIds"), source_id, key)
    return out


def _set_or_clear(out: Contact, name: str, value: object) -> None:
    if value is None:
        out.pop(name, None)
    else:
        out[name] = value


def _merge_address(out: Contact, wanted: object, owned: Iterable[str]) -> None:
    held = out.get("address")
    address = dict(held) if isinstance(held, Mapping) else {}
    source = wanted if isinstance(wanted, Mapping) else {}
    for part in owned:
        _set_or_clear(address, part, source.get(part))
    if address:
        out["address"] = address
    else:
        out.pop("address", None)


def _merge_custom_fields(
    out: Contact, wanted_fields: object, ownership: Ownership, schema: Mapping[str, Any] | None
) -> None:
    """Custom fields are valid only against the one schema a contact names. Under our schema
    (or none): owned keys set or cleared, the schema's other keys kept. Under another schema:
    kept as they are while the CRM has no custom field for the contact, else replaced by ours
    (a contact has one schema). Without a schema of ours nothing here is ours."""
    if schema is None:
        return
    given = wanted_fields if isinstance(wanted_fields, Mapping) else {}
    wanted = {k: v for k, v in given.items() if ownership.owns_custom_field(k)}
    held_schema = out.get("schema")
    held_id = held_schema.get("id") if isinstance(held_schema, Mapping) else None
    if held_id is not None and held_id != schema.get("id"):
        if wanted:
            out["customFields"] = copy.deepcopy(wanted)
            out["schema"] = dict(schema)
        return
    held_fields = out.get("customFields")
    held = held_fields if isinstance(held_fields, Mapping) else {}
    fields = {k: v for k, v in held.items() if not ownership.owns_custom_field(k)}
    fields.update(copy.deepcopy(wanted))
    if fields:
        out["customFields"] = fields
        out["schema"] = dict(schema)
    else:
        out.pop("customFields", None)
        out.pop("schema", None)


def _merge_external_ids(held: object, source_id: str, key: str) -> list[dict[str, Any]]:
    ours = {"externalSource": {"id": source_id}, "value": key}
    merged: list[dict[str, Any]] = []
    placed = False
    for ext in held if isinstance(held, list) else []:
        if not isinstance(ext, Mapping):
            continue
        source = ext.get("externalSource")
        is_ours = (
            isinstance(source, Mapping)
            and source.get("id") == source_id
            and ext.get("value") == key
        )
        if is_ours:
            if not placed:
                merged.append(copy.deepcopy(ours))
                placed = True
            continue
        merged.append(copy.deepcopy(dict(ext)))
    if not placed:
        merged.append(ours)
    return merged
