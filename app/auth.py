"""Authentication and scopes: credentials from Settings, Principal, require()."""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import logging
from dataclasses import dataclass

from flask import Flask, g, request

from .config import SCOPES, Credential, Settings
from .errors import ApiError
from .state import get_state

log = logging.getLogger("fusink.auth")

CHALLENGE = {"WWW-Authenticate": 'Basic realm="fusink", charset="UTF-8"'}


@dataclass(frozen=True)
class Principal:
    """Who made the request, and what they may do."""

    name: str
    scopes: frozenset[str]
    agents: frozenset[str] | None = None

    def check_agent(self, agent_id: str) -> None:
        """Raise 403 unless this principal may touch `agent_id`'s streams."""
        if self.agents is not None and agent_id not in self.agents:
            raise ApiError(403, f"{self.name} may not access agent {agent_id!r}.")


ANONYMOUS = Principal("anonymous (AUTH_DISABLED)", frozenset(SCOPES))


class Authenticator:
    """Matches presented secrets against every configured credential."""

    def __init__(self, settings: Settings):
        self.disabled = settings.auth_disabled
        self.keys = [(c.secret.encode(), _principal(c)) for c in settings.api_keys]
        self.users = [(c.secret.encode(), _principal(c)) for c in settings.basic_auth_users]

    def authenticate(self) -> Principal:
        """The request's principal; raise 401 when its credentials match none."""
        if self.disabled:
            return ANONYMOUS
        presented = _presented_credentials()
        if not presented:
            raise ApiError(401, "Credentials required.", headers=CHALLENGE)
        for kind, secret in presented:
            principal = _match(self.keys if kind == "key" else self.users, secret)
            if principal is not None:
                return principal
        raise ApiError(401, "Invalid credentials.", headers=CHALLENGE)


def _principal(credential: Credential) -> Principal:
    return Principal(credential.name, credential.scopes, credential.agents)


def _presented_credentials() -> list[tuple[str, bytes]]:
    presented = []
    # The headers as the server gave them, without a lookup per name.
    environ = request._get_current_object().environ
    api_key = environ.get("HTTP_X_API_KEY")
    if api_key:
        presented.append(("key", api_key.encode()))
    scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        presented.append(("key", value.encode()))
    elif scheme.lower() == "basic" and value:
        try:
            presented.append(("user", base64.b64decode(value, validate=True)))
        except (binascii.Error, ValueError):
            raise ApiError(401, "Malformed Basic credentials.", headers=CHALLENGE) from None
    return presented


def _match(candidates: list[tuple[bytes, Principal]], secret: bytes) -> Principal | None:
    # Compare against every candidate so timing does not reveal which one matched.
    found = None
    for expected, principal in candidates:
        if hmac.compare_digest(expected, secret):
            found = principal
    return found


def require(*scopes: str):
    """View decorator: authenticate, then demand any one of `scopes` (403 if none)."""

    wanted = frozenset(scopes)

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            principal = get_state().authenticator.authenticate()
            if not principal.scopes & wanted:
                raise ApiError(403, f"{principal.name} lacks scope {' or '.join(scopes)}.")
            g._get_current_object().principal = principal
            return view(*args, **kwargs)

        wrapper.required_scopes = scopes
        return wrapper

    return decorate


def register(app: Flask) -> None:
    """Log loudly when the API runs without authentication."""
    if app.extensions["fusink"].settings.auth_disabled:
        log.warning("AUTH_DISABLED=1: every request is accepted without credentials")
