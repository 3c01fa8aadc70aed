"""Contact merges: the body of the contact a merge leaves, and the merge fields of the SDK model.

The platform's merge endpoint (`POST /contacts/merge`, SDK `MergeContactsRequest`) documents its
rule: a field `valueOverride` leaves null "will be taken from the most recently-modified contact
in the merge set", and conflicting phone/e-mail values "will be moved to any other available
phone/email fields". `merged_body` applies that rule from a base contact (the most recently
modified one for a merge into a new contact; the target for the admin merge into an existing
contact): the base's fields, what it lacks filled from the others (most recent first), their
phones and e-mails moved into free slots, ExternalIds and identifiers united.

Merge fields (`ContactAddressableEntityRef` = `{id, selfUri}`): the survivor carries
`canonicalContact` (itself), `mergeSet` (itself and every contact ever merged into it) and
`mergedFrom` (the contacts merged into it directly); a merged-away contact carries `mergedTo`
and `canonicalContact` (the survivor).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crm_genesys.emulator.validation import MAX_EXTERNAL_IDS, PHONE_FIELDS, claim_key

API = "/api/v2/externalcontacts"
EMAIL_FIELDS = ("workEmail", "personalEmail", "otherEmail")
MAX_MERGE_SET = 25
# Set by the server, never merged from one contact into another.
SERVER_FIELDS = frozenset(
    {
        "id",
        "type",
        "division",
        "createDate",
        "modifyDate",
        "selfUri",
        "externalDataSources",
        "canonicalContact",
        "mergeSet",
        "mergedFrom",
        "mergedTo",
        "mergeOperation",
        "schema",
        "customFields",
    }
)
_TYPE_RANK = {"Ephemeral": 0, "Identified": 1, "Curated": 2}


class MergeError(ValueError):
    """The merge cannot be made (the message says why)."""


def ref(contact_id: str) -> dict[str, str]:
    return {"id": contact_id, "selfUri": f"{API}/contacts/{contact_id}"}


def by_recency(contacts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most recently modified first (ISO dates in UTC compare as text)."""
    return sorted(contacts, key=lambda c: c.get("modifyDate") or "", reverse=True)


def merged_body(base: dict[str, Any], others: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The survivor's content fields (see the module docstring); `MergeError` when the result
    would carry more ExternalIds than a contact may."""
    out = {k: v for k, v in base.items() if k not in SERVER_FIELDS}
    for other in others:
        for key, value in other.items():
            if key in SERVER_FIELDS or key in PHONE_FIELDS or key in EMAIL_FIELDS:
                continue
            if key in ("externalIds", "identifiers"):
                continue
            if out.get(key) in (None, "", [], {}):
                out[key] = value
        _move_into_free_slots(out, other, PHONE_FIELDS, _phone_value)
        _move_into_free_slots(out, other, EMAIL_FIELDS, lambda v: str(v).lower())
    # Custom fields travel with the schema they belong to: the base's, else the first other's.
    for source in (base, *others):
        if source.get("schema"):
            out["schema"] = source["schema"]
            if source.get("customFields"):
                out["customFields"] = source["customFields"]
            break
    external_ids = _union((base, *others), "externalIds", _external_id_key)
    if len(external_ids) > MAX_EXTERNAL_IDS:
        raise MergeError(
            f"the merged contact would carry {len(external_ids)} ExternalIds "
            f"(at most {MAX_EXTERNAL_IDS})"
        )
    if external_ids:
        out["externalIds"] = external_ids
    identifiers = _union((base, *others), "identifiers", claim_key)
    if identifiers:
        out["identifiers"] = identifiers
    return out


def merged_type(contacts: Sequence[dict[str, Any]]) -> str:
    """The survivor's type: the most curated of the set."""
    return max((c.get("type", "Curated") for c in contacts), key=lambda t: _TYPE_RANK.get(t, 2))


def survivor_merge_fields(survivor: dict[str, Any], merged: Sequence[dict[str, Any]]) -> None:
    """Set the survivor's `canonicalContact`, `mergeSet` and `mergedFrom` in place."""
    sid = survivor["id"]
    members = [sid]
    for contact in (survivor, *merged):
        members += [m["id"] for m in contact.get("mergeSet") or []]
        members.append(contact["id"])
    survivor["canonicalContact"] = ref(sid)
    survivor["mergeSet"] = [ref(i) for i in dict.fromkeys(members)]
    direct = [m["id"] for m in survivor.get("mergedFrom") or []] + [c["id"] for c in merged]
    survivor["mergedFrom"] = [ref(i) for i in dict.fromkeys(direct)]


def merged_away(contact: dict[str, Any], survivor_id: str, modify_date: str) -> dict[str, Any]:
    """A merged-away contact as `/contacts/{id}/unresolved` shows it afterwards."""
    return {
        **contact,
        "mergedTo": ref(survivor_id),
        "canonicalContact": ref(survivor_id),
        "modifyDate": modify_date,
    }


def _phone_value(phone: Any) -> str:
    if not isinstance(phone, dict):
        return str(phone)
    return str(phone.get("e164") or phone.get("display") or "")


def _move_into_free_slots(
    out: dict[str, Any], other: dict[str, Any], slots: Sequence[str], value_of: Any
) -> None:
    """Each of `other`'s values in `slots` that `out` lacks goes into the same slot when it is
    free, else into the first free one, else it is dropped."""
    present = {value_of(out[s]) for s in slots if out.get(s)}
    for slot in slots:
        value = other.get(slot)
        if not value or value_of(value) in present:
            continue
        target = slot if not out.get(slot) else next((s for s in slots if not out.get(s)), None)
        if target is not None:
            out[target] = value
            present.add(value_of(value))


def _external_id_key(ext: dict[str, Any]) -> str:
    return f"{ext['externalSource']['id']}\x1f{ext['value']}"


def _union(contacts: Sequence[dict[str, Any]], field: str, key: Any) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for contact in contacts:
        for item in contact.get(field) or []:
            seen.setdefault(key(item), item)
    return list(seen.values())
