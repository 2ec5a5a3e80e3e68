"""Store: the only code that talks to Redis; it loads and runs the scripts in lua/."""

from .admin import StreamAdmin
from .base import StoreUnavailable, unavailable_as_503
from .ingest import BatchResult, IngestStore, RowKeyConflict
from .reads import ChangePage, StreamReads

__all__ = [
    "BatchResult",
    "ChangePage",
    "RowKeyConflict",
    "Store",
    "StoreUnavailable",
    "unavailable_as_503",
]


class Store(IngestStore, StreamReads, StreamAdmin):
    """fusink's data in Redis, in the layout the README documents."""
