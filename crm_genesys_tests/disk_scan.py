"""What a deployment left on disk: secrets, bearer tokens and contact data, and where.

`scan_deployment(deployment, contact_values)` reads every file under the deployment's root (the
Dagster instance with its event log and compute logs, the data directory with the sync state and
the frame store, the sync processes' output, the emulator's org) as bytes and reports:
- the client secret anywhere but the emulator's own files (the emulator is Genesys' side);
- any bearer token the emulator issued (found by digest: the emulator keeps only digests, so
  every 64-character base64url run on disk is hashed and compared), anywhere;
- contact values (e-mails, E.164 phones) outside the places the design gives them: the CRM
  itself, the sync state, the emulator, and the frame store only while a window is unfinished;
- files of the sync holding contact data that anyone but their owner may read (the CRM's and
  the emulator's files are the other systems' business).
It shares nothing with the code it checks: plain reads, `hashlib`, `sqlite3`.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import stat
from dataclasses import dataclass, field
from pathlib import Path

from crm_genesys.contacts.mapping import EMAIL_SLOTS, PHONE_SLOTS
from crm_genesys_tests.cli_deployment import CLIENT_SECRET, Deployment

_TOKEN_LIKE = re.compile(rb"[A-Za-z0-9_-]{64}")
# Where contact data may live, relative to the deployment's root (the frame store only until
# its window succeeds: `frames_allowed`).
CONTACT_HOMES = ("data/demo_crm.sqlite", "data/sync_state.sqlite", "emulator/")
FRAMES = "data/frames/"
# Files of the systems around the sync (the CRM, Genesys): their modes are their owners' business.
FOREIGN = ("data/demo_crm.sqlite", "emulator/")


class Needles:
    """Contact values to look for in a file's bytes, as `any(n in data for n in values)` finds
    them, in time that does not grow with the number of values: each value is found by its
    first anchor byte (`@` of an e-mail, `+` of an E.164 phone), and at each anchor of the data
    only the byte runs of the lengths the values have on either side of it are looked up in
    sets. Values without an anchor byte are searched for one by one."""

    ANCHORS = (b"@", b"+")

    def __init__(self, values: list[bytes]) -> None:
        # anchor -> length after it -> text after it -> length before it -> texts before it
        self.index: dict[bytes, dict[int, dict[bytes, dict[int, set[bytes]]]]] = {}
        self.plain: list[bytes] = []
        for value in values:
            if not value:
                continue
            anchor = next((a for a in self.ANCHORS if a in value), None)
            if anchor is None:
                self.plain.append(value)
                continue
            at = value.index(anchor)
            before, after = value[:at], value[at + 1 :]
            by_after = self.index.setdefault(anchor, {}).setdefault(len(after), {})
            by_after.setdefault(after, {}).setdefault(len(before), set()).add(before)

    def found_in(self, data: bytes) -> bool:
        """Whether any value occurs in `data`."""
        if any(v in data for v in self.plain):
            return True
        for anchor, by_length in self.index.items():
            at = data.find(anchor)
            while at >= 0:
                for length, by_after in by_length.items():
                    befores = by_after.get(data[at + 1 : at + 1 + length])
                    # Near the start, data[at - n : at] is shorter than n: it matches nothing.
                    if befores is not None and any(
                        data[max(0, at - n) : at] in texts for n, texts in befores.items()
                    ):
                        return True
                at = data.find(anchor, at + 1)
        return False


@dataclass
class DiskReport:
    files: int = 0
    secrets: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    misplaced_contacts: list[str] = field(default_factory=list)
    readable_by_others: list[str] = field(default_factory=list)
    contact_files: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.secrets or self.tokens or self.misplaced_contacts or self.readable_by_others
        )


def issued_token_digests(emulator_dir: Path) -> set[str]:
    """Digests of every token the emulator org under `emulator_dir` issued."""
    digests: set[str] = set()
    for db in emulator_dir.glob("*.sqlite"):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            digests |= {d for (d,) in conn.execute("SELECT digest FROM tokens")}
        except sqlite3.OperationalError:
            pass
        finally:
            conn.close()
    return digests


def scan_deployment(
    deployment: Deployment, contact_values: list[str], *, frames_allowed: bool = False
) -> DiskReport:
    """Scan every file under `deployment.root`; see the module docstring."""
    root = deployment.root
    digests = issued_token_digests(root / "emulator")
    assert digests, "the emulator issued no token: nothing authenticated"
    needles = Needles([v.encode() for v in contact_values if v])
    homes = CONTACT_HOMES + ((FRAMES,) if frames_allowed else ())
    report = DiskReport()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        try:
            data = path.read_bytes()
        except OSError:
            continue  # a file removed while we walk (sqlite journals)
        report.files += 1
        if not rel.startswith("emulator/") and CLIENT_SECRET.encode() in data:
            report.secrets.append(rel)
        if any(hashlib.sha256(m).hexdigest() in digests for m in _TOKEN_LIKE.findall(data)):
            report.tokens.append(rel)
        if needles.found_in(data):
            report.contact_files.append(rel)
            if not any(
                rel == h or rel.startswith(h + "-") or (h.endswith("/") and rel.startswith(h))
                for h in homes
            ):
                report.misplaced_contacts.append(rel)
            elif not rel.startswith(FOREIGN) and path.stat().st_mode & (
                stat.S_IRWXG | stat.S_IRWXO
            ):
                report.readable_by_others.append(f"{rel} {stat.filemode(path.stat().st_mode)}")
    return report


def genesys_values(deployment: Deployment) -> list[str]:
    """E.164 phones and e-mails the emulator holds (what the sync sent), as a needle list."""
    values = set()
    for contact in deployment.contacts():
        for slot in PHONE_SLOTS:
            if (phone := contact.get(slot)) and phone.get("e164"):
                values.add(phone["e164"])
        for slot in EMAIL_SLOTS:
            if contact.get(slot):
                values.add(contact[slot])
    return sorted(values)


def contact_values_of(crm_path: Path, limit: int = 400) -> list[str]:
    """E-mails of the CRM, as a needle list (phones are checked by their E.164 in `genesys`)."""
    conn = sqlite3.connect(f"file:{crm_path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT email FROM contacts WHERE email LIKE '%_@_%.__%' LIMIT ?", (limit,)
        ).fetchall()
    finally:
        conn.close()
    return sorted({str(e).strip() for (e,) in rows if e and len(str(e).strip()) > 6})
