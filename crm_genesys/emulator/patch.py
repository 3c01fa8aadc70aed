"""`PATCH /contacts/{id}` (`ContactsPatchChange`): one change applied to a contact's body.

Paths are `$.a.b` object paths; actions `UpdateIfEmpty`, `Update`, `UpdateIfExists`,
`AppendToCollection`, `Remove`, `RemoveFromCollection`. The caller validates the result as a
full update.
"""

from __future__ import annotations

from typing import Any

from crm_genesys.emulator.errors import ApiError, FieldProblem

_PATCH_ACTIONS = (
    "UpdateIfEmpty",
    "UpdateIfExists",
    "Update",
    "AppendToCollection",
    "Remove",
    "RemoveFromCollection",
)


def apply_patch(contact: dict[str, Any], change: Any, where: str) -> None:
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
