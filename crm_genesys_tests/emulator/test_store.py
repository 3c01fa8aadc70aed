"""The org file: a file written before the index had visibility columns opens and answers."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from crm_genesys.emulator import REALISM_PROFILES, EmulatorConfig, create_app


def test_an_older_org_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "emulator.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE contacts (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                               body TEXT NOT NULL);
        CREATE TABLE contact_keys (kind TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL);
        """
    )
    body = {"id": "c-1", "firstName": "Old", "type": "Curated", "workEmail": "old@x.org"}
    old.execute("INSERT INTO contacts (id, body) VALUES ('c-1', ?)", (json.dumps(body),))
    old.execute("INSERT INTO contact_keys VALUES ('email', 'old@x.org', 1)")
    old.commit()
    old.close()
    emulator = create_app(EmulatorConfig(db_path=path)).state.emulator
    assert emulator.get_contact("c-1")["firstName"] == "Old"
    assert [c["id"] for c in emulator.reverse_whitepages("old@x.org")["contacts"]] == ["c-1"]
    assert [c["id"] for c in emulator.scan(10, None)["entities"]] == ["c-1"]
    assert sorted(REALISM_PROFILES) == ["basic", "realistic"]
