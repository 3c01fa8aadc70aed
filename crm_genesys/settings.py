"""Where things live, read from the environment. With nothing set, the embedded defaults run.

Every setting has one environment variable; nothing here talks to a network or reads a secret's
value into a log. Secrets are read by the Genesys resource itself, from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_DIR = ".crm_genesys"
DEMO_MAPPING = Path(__file__).parent / "mappings" / "demo_crm.yaml"


def data_dir() -> Path:
    """The directory of the embedded defaults: demo CRM, emulator org, sync state."""
    return Path(os.environ.get("CRM_GENESYS_DATA_DIR", DEFAULT_DATA_DIR)).resolve()


def demo_crm_path() -> Path:
    return data_dir() / "demo_crm.sqlite"


def emulator_db_path() -> Path:
    return data_dir() / "emulator.sqlite"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def crm_database_url() -> str:
    """`CRM_DATABASE_URL`: any SQLAlchemy URL; the demo CRM by default."""
    return os.environ.get("CRM_DATABASE_URL") or sqlite_url(demo_crm_path())


def crm_mapping_path() -> Path:
    """`CRM_MAPPING`: the mapping registry YAML; the demo CRM's mapping by default."""
    return Path(os.environ.get("CRM_MAPPING") or DEMO_MAPPING)


def sync_state_url() -> str:
    """`SYNC_STATE_URL`: the sync-state store; SQLite in the data dir by default."""
    return os.environ.get("SYNC_STATE_URL") or sqlite_url(data_dir() / "sync_state.sqlite")
