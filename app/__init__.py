"""fusink: receives fuagent change batches and keeps the rows in Redis."""

import os

from flask import Flask

from . import auth, errors, logs, metrics, rows, spec
from .application import FusinkFlask
from .auth import Authenticator
from .bodies import FusinkRequest
from .config import Settings
from .jsonio import OrjsonProvider
from .routes import fuagent, ops, streams, ui
from .schemas import BatchSchema
from .state import State
from .store import Store


def create_app(settings: Settings | None = None, redis=None) -> Flask:
    """The fusink WSGI app; settings from the environment unless given.

    `redis` is a client to use instead of connecting (tests pass fakeredis).
    """
    logs.configure()
    settings = settings or Settings.from_env(os.environ)
    app = FusinkFlask(__name__)
    register_state(app, settings, redis)
    logs.register(app)
    metrics.register(app)
    errors.register(app)
    auth.register(app)
    fuagent.register(app)
    streams.register(app)
    ui.register(app)
    app.register_blueprint(ops.bp)
    register_spec(app)
    return app


def register_state(app: Flask, settings: Settings, redis) -> None:
    """Settings, JSON provider, request class, body limit, and the State the views read."""
    app.json = OrjsonProvider(app)
    app.request_class = FusinkRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    key_fields_for = rows.key_fields_resolver(settings.row_key_rules, settings.row_key_fields)
    app.extensions["fusink"] = State(
        settings=settings,
        authenticator=Authenticator(settings),
        batch_schema=BatchSchema(key_fields_for, settings.max_batch_events),
        key_fields_for=key_fields_for,
        store=Store(redis, settings) if redis is not None else None,
    )


def register_spec(app: Flask) -> None:
    """Render the OpenAPI document once; write it to SPEC_FILE when that is set."""
    state = app.extensions["fusink"]
    state.spec_bytes = spec.render(app)
    if state.settings.spec_file:
        spec.write(state.settings.spec_file, state.spec_bytes)
