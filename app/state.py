"""App state in app.extensions["fusink"], and accessors that read it back."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app

from . import connection
from .config import Settings
from .schemas import BatchSchema
from .store import Store

if TYPE_CHECKING:  # auth.py reads the state through get_state
    from .auth import Authenticator


@dataclass
class State:
    settings: Settings
    authenticator: Authenticator
    batch_schema: BatchSchema
    key_fields_for: Callable[[str, str], tuple[str, ...]]  # a stream's row-key fields
    store: Store | None = None
    spec_bytes: bytes = b""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get_store(self) -> Store:
        """The Store, connecting on first use so that no process touches Redis early."""
        if self.store is None:
            with self._lock:
                if self.store is None:
                    self.store = Store(
                        connection.connect(self.settings),
                        self.settings,
                        loop_connector=connection.loop_connector(self.settings),
                    )
        return self.store


def get_state() -> State:
    # An attribute read through one of Flask's proxies (current_app, request, g)
    # costs about a microsecond, several times a request; on the object itself, a
    # fifth of that or less.
    return current_app._get_current_object().extensions["fusink"]


def get_settings() -> Settings:
    return get_state().settings


def get_store() -> Store:
    return get_state().get_store()
