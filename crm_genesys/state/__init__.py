"""The sync-state store: business key -> Genesys contact, create intents, dead letters."""

from crm_genesys.state.store import (
    DeadLetter,
    DeleteWrite,
    IntentWrite,
    PendingIntent,
    StateWrite,
    StoreBatch,
    SyncStateStore,
)

__all__ = [
    "DeadLetter",
    "DeleteWrite",
    "IntentWrite",
    "PendingIntent",
    "StateWrite",
    "StoreBatch",
    "SyncStateStore",
]
