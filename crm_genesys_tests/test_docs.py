"""The documentation names every setting the code reads, so an operator can find each one."""

from __future__ import annotations

from pathlib import Path

from crm_genesys import settings
from crm_genesys.genesys.settings import GENESYS_SETTINGS_VARS

REPO = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented() -> None:
    text = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted(REPO.glob("docs/*.md"))])
    names = [*settings.SETTINGS, *GENESYS_SETTINGS_VARS]
    assert names, "no settings found: the registry moved"
    undocumented = [name for name in names if f"`{name}" not in text and f"{name}=" not in text]
    assert undocumented == [], f"settings no document mentions: {undocumented}"
