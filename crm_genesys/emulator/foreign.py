"""The org's other writers: agents, other integrations and interactions, which change contacts
in ways a CRM sync does not own, between two of its runs.

`ForeignWriter.run` (behind `Emulator.run_foreign_writer` and `POST /__emulator/foreign-writer`)
edits Curated contacts through the emulator's own operations (so validation, index lag and
exclusive claims apply), and reports each change as a `ForeignEdit`, so a test can check later
that every one of them survived the sync:
- `surveyOptOut`: set (an agent records the customer's wish);
- `externalSystemUrl`: a link into another system;
- `twitterId`: a social id (`TwitterId`);
- `externalId`: a second ExternalId from another External Source (created on first use, named
  `FOREIGN_SOURCE_NAME`);
- `identifier`: a claimed identifier (a `Cookie` `ContactIdentifier`);
- `merge`: a group of contacts sharing an ExternalId (duplicates) merged into one of them,
  chosen at random;
- `interaction`: a new Ephemeral or Identified contact, as interactions leave them.
Everything is drawn from the generator it is given (seeded by the caller).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from crm_genesys.emulator.errors import ApiError

if TYPE_CHECKING:
    from crm_genesys.emulator.emulator import Emulator

FOREIGN_SOURCE_NAME = "foreign-integration"
EDIT_KINDS = ("surveyOptOut", "externalSystemUrl", "twitterId", "externalId", "identifier")


@dataclass(frozen=True)
class ForeignEdit:
    """One change made by a foreign writer: `field` of contact `contact_id` now holds `value`
    (for list fields: `value` is one item of the list). A merge names the contacts merged into
    `contact_id` and, as `value`, the ExternalIds the survivor carries."""

    kind: str
    contact_id: str
    field: str
    value: Any
    merged_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["merged_ids"] = list(self.merged_ids)
        return out

    def survives_in(self, contact: dict[str, Any]) -> bool:
        """Whether `contact` (the same contact, read later) still holds this change."""
        if contact.get("id") != self.contact_id:
            return False
        current = contact.get(self.field)
        if self.kind == "merge":
            return all(ext in (current or []) for ext in self.value)
        if self.field in ("externalIds", "identifiers"):
            return any(_same_item(self.value, item) for item in current or [])
        return bool(current == self.value)


def _same_item(wanted: dict[str, Any], item: Any) -> bool:
    """An item of a list field equals the edit's, ignoring fields the server adds."""
    return isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items())


class ForeignWriter:
    """Edits an emulated org as its other users do (see the module docstring)."""

    def __init__(self, emulator: Emulator, rng: random.Random) -> None:
        self.emulator = emulator
        self.rng = rng

    def run(
        self,
        edits: int,
        merges: int = 0,
        kinds: Sequence[str] | None = None,
        interactions: int = 0,
    ) -> list[ForeignEdit]:
        """Make `merges` merges, then `edits` edits (each on another live Curated contact, kinds
        taken in turn from `kinds`, all by default), then `interactions` new contacts."""
        chosen = list(kinds) if kinds is not None else list(EDIT_KINDS)
        unknown = set(chosen) - set(EDIT_KINDS)
        if unknown or not chosen:
            raise ValueError(f"kinds must be among {', '.join(EDIT_KINDS)}; got {sorted(unknown)}")
        if edits < 0 or merges < 0 or interactions < 0:
            raise ValueError("edits, merges and interactions must be >= 0")
        # Merges first, so every edit reported is on a contact that is still live afterwards.
        done = self._merges(merges)
        curated = [c for c in self.emulator.all_contacts() if c.get("type") == "Curated"]
        targets = self.rng.sample(curated, min(edits, len(curated)))
        self.rng.shuffle(chosen)
        for i, contact in enumerate(targets):
            edit = self._edit(contact, chosen[i % len(chosen)])
            if edit is not None:
                done.append(edit)
        if interactions:
            seed = self.rng.getrandbits(32)
            for contact in self.emulator.seed_interaction_contacts(interactions, seed):
                done.append(ForeignEdit("interaction", contact["id"], "type", contact["type"]))
        return done

    def _tag(self) -> str:
        return f"{self.rng.getrandbits(48):012x}"

    def _edit(self, contact: dict[str, Any], kind: str) -> ForeignEdit | None:
        cid = contact["id"]
        value: Any
        if kind == "identifier":
            value = {"type": "Cookie", "value": f"cookie-{self._tag()}"}
            claim = {"operation": "Claim", "identifier": value}
            try:
                self.emulator.claim_identifier(cid, claim)
            except ApiError:
                return None
            return ForeignEdit(kind, cid, "identifiers", value)
        body = dict(contact)
        if kind == "surveyOptOut":
            field_name, value = "surveyOptOut", not bool(contact.get("surveyOptOut"))
            body[field_name] = value
        elif kind == "externalSystemUrl":
            field_name, value = "externalSystemUrl", f"https://desk.example.com/c/{self._tag()}"
            body[field_name] = value
        elif kind == "twitterId":
            handle = f"cust_{self._tag()}"
            field_name, value = "twitterId", {"screenName": handle, "name": handle}
            body[field_name] = value
        else:
            field_name = "externalIds"
            value = {"externalSource": {"id": self._foreign_source()}, "value": f"FX-{self._tag()}"}
            body[field_name] = [*(contact.get("externalIds") or []), value]
        try:
            self.emulator.update_contact(cid, body)
        except ApiError:
            return None  # e.g. the contact already carries 10 ExternalIds
        return ForeignEdit(kind, cid, field_name, value)

    def _foreign_source(self) -> str:
        store = self.emulator.store
        for _, source in store.list_sources(FOREIGN_SOURCE_NAME, None, 0, 1000):
            if source["name"] == FOREIGN_SOURCE_NAME:
                return str(source["id"])
        return str(self.emulator.create_source({"name": FOREIGN_SOURCE_NAME})["id"])

    def _merges(self, count: int) -> list[ForeignEdit]:
        """Merge up to `count` groups of live contacts that share an ExternalId."""
        groups: dict[str, list[str]] = {}
        for contact in self.emulator.all_contacts():
            for ext in contact.get("externalIds") or []:
                key = f"{ext['externalSource']['id']}\x1f{ext['value']}"
                groups.setdefault(key, []).append(contact["id"])
        duplicated = [ids for _, ids in sorted(groups.items()) if len(ids) > 1]
        done: list[ForeignEdit] = []
        merged: set[str] = set()
        for ids in self.rng.sample(duplicated, len(duplicated)):
            if len(done) >= count:
                break
            if merged & set(ids):
                continue  # a contact already merged away in this run
            survivor = self.rng.choice(ids)
            others = tuple(i for i in ids if i != survivor)
            try:
                result = self.emulator.merge_contacts(others, into=survivor)
            except ApiError:
                continue  # e.g. too many ExternalIds together, or different divisions
            merged.update(ids)
            moved = list(result.get("externalIds") or [])
            done.append(ForeignEdit("merge", survivor, "externalIds", moved, others))
        return done


def interaction_contacts(count: int, rng: random.Random) -> Iterator[tuple[str, dict[str, Any]]]:
    """`count` (type, body) pairs of contacts interactions leave behind: Ephemeral ones know
    only a web cookie; Identified ones a phone and an e-mail, claimed as identifiers."""
    numbers = rng.sample(range(10_000), min(count, 10_000))
    for i in range(count):
        tag = f"{rng.getrandbits(40):010x}"
        cookie = {"type": "Cookie", "value": f"visitor-{tag}"}
        if i % 2 == 0:
            yield "Ephemeral", {"identifiers": [cookie]}
            continue
        phone = f"+1415555{numbers[i % len(numbers)]:04d}"
        email = f"visitor.{tag}@example.net"
        yield (
            "Identified",
            {
                "cellPhone": {"display": phone},
                "personalEmail": email,
                "identifiers": [
                    {"type": "Phone", "value": phone},
                    {"type": "Email", "value": email},
                ],
            },
        )
