"""The Genesys contact schema the mapping's custom fields need: `build_contact_schema(mapping)`.

The body is what `POST /api/v2/externalcontacts/contacts/schemas` takes (the SDK's `DataSchema`:
`name`, `enabled`, `jsonSchema`); for a `PUT` the caller adds the current `version`. Each custom
field is a property keyed `<name>_<suffix>` that refers to the platform's core type
(`{"allOf": [{"$ref": "#/definitions/<suffix>"}]}`) with its limits, the shape Genesys documents.
The values `normalize` puts in a payload's `customFields` use exactly these keys and types.

The payload carries no `schema` reference: the schema's id and version are only known after the
push, so the sink adds `"schema": {"id": ..., "version": ...}` to every body that has
`customFields` (and must drop `customFields` when no schema was pushed).
"""

from __future__ import annotations

from typing import Any

from crm_genesys.contacts.mapping import TAG_MAX_ITEMS, TYPE_SUFFIX, Mapping

JSON_SCHEMA_DRAFT = "http://json-schema.org/draft-04/schema#"


def _title(name: str) -> str:
    return name.replace("_", " ").strip().capitalize()[:100]


def build_contact_schema(mapping: Mapping) -> dict[str, Any]:
    """The `DataSchema` body for the mapping's custom fields (see the module docstring)."""
    spec = mapping.custom_fields
    properties: dict[str, Any] = {}
    for field in mapping.custom_field_list():
        f = field.spec
        suffix = TYPE_SUFFIX[f.type]
        prop: dict[str, Any] = {
            "allOf": [{"$ref": f"#/definitions/{suffix}"}],
            "title": f.title or _title(field.name),
            "description": f.description or f"CRM column {f.column}",
        }
        if f.type in ("text", "textarea", "identifier", "url"):
            prop["minLength"] = 0
            prop["maxLength"] = f.limit
        elif f.type in ("integer", "number"):
            if f.minimum is not None:
                prop["minimum"] = int(f.minimum) if f.type == "integer" else f.minimum
            if f.maximum is not None:
                prop["maximum"] = int(f.maximum) if f.type == "integer" else f.maximum
        elif f.type == "dropdown":
            options = list(f.options or [])
            prop["enum"] = options
            prop["_enumProperties"] = {o: {"title": o, "_disabled": False} for o in options}
        elif f.type == "tag":
            prop["items"] = {"minLength": 1, "maxLength": f.limit}
            prop["minItems"] = 0
            prop["maxItems"] = f.max_items or TAG_MAX_ITEMS
            prop["uniqueItems"] = True
        properties[field.key] = prop
    name = spec.schema_name if spec else "crm_genesys"
    return {
        "name": name,
        "enabled": True,
        "jsonSchema": {
            "$schema": JSON_SCHEMA_DRAFT,
            "title": name,
            "description": (spec.description if spec and spec.description else "")
            or f"CRM fields synced from {mapping.source.table}",
            "properties": properties,
        },
    }


def schema_holds(existing: dict[str, Any], body: dict[str, Any]) -> bool:
    """Whether the org's schema already holds what `body` would push (so nothing is sent): the
    same fields, each with every attribute we set (the platform may add attributes of its own)."""
    held, wanted = existing.get("jsonSchema") or {}, body.get("jsonSchema") or {}
    if existing.get("enabled", True) != body.get("enabled", True):
        return False
    held_props, wanted_props = held.get("properties") or {}, wanted.get("properties") or {}
    if set(held_props) != set(wanted_props):
        return False
    if any(not _holds(held_props[k], v) for k, v in wanted_props.items()):
        return False
    return all(_holds(held.get(k), v) for k, v in wanted.items() if k != "properties")


def _holds(held: object, wanted: object) -> bool:
    if isinstance(wanted, dict):
        return isinstance(held, dict) and all(_holds(held.get(k), v) for k, v in wanted.items())
    return held == wanted
