"""Settings: every environment variable fusink reads, parsed and validated at start."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

SCOPES = ("ingest", "read", "admin")


class ConfigError(Exception):
    """One or more settings are invalid; the message names every one of them."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        lines = [f"{name}: {problem}" for name, problem in problems.items()]
        super().__init__("invalid settings:\n  " + "\n  ".join(lines))


@dataclass(frozen=True)
class Credential:
    """One API key or Basic user, with what it may do."""

    name: str  # shown in logs instead of the secret
    secret: str  # the key, or "user:password" for a Basic user
    scopes: frozenset[str] = frozenset(SCOPES)
    agents: frozenset[str] | None = None  # None: every agent


@dataclass(frozen=True)
class RowKeyRule:
    """Streams whose ids match these globs (None: any) are keyed by `fields`."""

    fields: tuple[str, ...]
    agent: str | None = None
    task: str | None = None


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    redis_cluster_url: str | None = None
    redis_timeout: float = 5.0
    wait_replicas: int = 0  # 0: don't wait for replicas
    wait_timeout_ms: int = 1000
    memory_high_watermark: float = 0.9  # fraction of maxmemory; 0: no check
    embedded_redis_dir: str = "fusink-data"
    key_prefix: str = "fusink"
    api_keys: tuple[Credential, ...] = ()
    basic_auth_users: tuple[Credential, ...] = ()
    auth_disabled: bool = False
    row_key_fields: tuple[str, ...] = ("id",)
    row_key_rules: tuple[RowKeyRule, ...] = ()  # the first match wins; none: ROW_KEY_FIELDS
    max_batch_events: int = 10_000
    max_content_length: int = 16 * 1024 * 1024
    snapshot_on_suggest: bool = True
    snapshot_prune: bool = True
    ingest_path: str = "/ingest-batch"
    status_path: str = "/fuagent-sync-status"
    public_url: str = "/"
    missing_checkpoint: str = "404"
    spec_file: str | None = None
    metrics_token: str | None = None  # None: /metrics is public
    change_feed_maxlen: int = 0  # 0: no change feed
    row_meta_every_row: bool = False  # as earlier versions: for a rolling upgrade from one
    ui_stale_after_s: float = 300.0  # /ui/ highlights streams not updated for longer

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, serving: bool = True) -> Settings:
        """Read every setting from `environ`; raise ConfigError naming each bad one.

        `serving=False` (the CLI) skips the rule that a served API needs credentials.
        """
        values, problems = {}, {}
        for name, coerce in _COERCERS.items():
            raw = environ.get(name.upper())
            if raw is None or raw.strip() == "":
                continue
            try:
                values[name] = coerce(raw.strip())
            except ValueError as exc:
                problems[name.upper()] = str(exc)
        if values.get("redis_url") and values.get("redis_cluster_url"):
            problems["REDIS_CLUSTER_URL"] = "set either REDIS_URL or REDIS_CLUSTER_URL"
        wait_timeout_s = values.get("wait_timeout_ms", cls.wait_timeout_ms) / 1000
        if values.get("wait_replicas") and wait_timeout_s >= values.get(
            "redis_timeout", cls.redis_timeout
        ):
            problems["WAIT_TIMEOUT_MS"] = "must be below REDIS_TIMEOUT (in ms)"
        if values.get("ingest_path", "/ingest-batch") == values.get(
            "status_path", "/fuagent-sync-status"
        ):
            problems["STATUS_PATH"] = "must differ from INGEST_PATH"
        if serving and not problems:
            has_credentials = values.get("api_keys") or values.get("basic_auth_users")
            if not has_credentials and not values.get("auth_disabled"):
                problems["API_KEYS"] = (
                    "no credential configured: set API_KEYS or BASIC_AUTH_USERS "
                    "(or AUTH_DISABLED=1 for local development only)"
                )
        if problems:
            raise ConfigError(problems)
        return cls(**values)


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, got {raw!r}")


def _number(parse, expected: str, ok, rule: str) -> Callable[[str], int | float]:
    """A coercer that parses with `parse` and insists on `ok(value)`."""

    def coerce(raw: str):
        try:
            value = parse(raw)
        except ValueError:
            raise ValueError(f"expected {expected}, got {raw!r}") from None
        if not ok(value):
            raise ValueError(f"{rule}, got {raw!r}")
        return value

    return coerce


_positive_int = _number(int, "a whole number", lambda v: v >= 1, "must be at least 1")
_whole_number = _number(int, "a whole number", lambda v: v >= 0, "must be at least 0")
_positive_float = _number(
    float, "a number of seconds", lambda v: 0 < v < math.inf, "must be above 0"
)
_fraction = _number(
    float,
    "a fraction such as 0.9",
    lambda v: 0 <= v <= 1,
    "must be between 0 and 1 (0 turns the check off)",
)


def _redis_url(*schemes: str) -> Callable[[str], str]:
    def coerce(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            raise ValueError(f"must start with {' or '.join(s + '://' for s in schemes)}")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("names no host")
        return raw

    return coerce


def _path(raw: str) -> str:
    if not raw.startswith("/") or re.search(r"[\s?#<>]", raw):
        raise ValueError(f"must be an absolute URL path such as /ingest-batch, got {raw!r}")
    return raw


def _row_key_fields(raw: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in raw.split(","))
    if not all(names) or len(set(names)) != len(names):
        raise ValueError(f"expected distinct comma-separated field names, got {raw!r}")
    return names


ROW_KEY_RULE_KEYS = {"agent", "task", "fields"}


def _row_key_rules(raw: str) -> tuple[RowKeyRule, ...]:
    rules = _json_entries(raw)
    return tuple(_row_key_rule(rule, n) for n, rule in enumerate(rules))


def _row_key_rule(rule: dict, position: int) -> RowKeyRule:
    where = f"rule {position}"
    unknown = sorted(set(rule) - ROW_KEY_RULE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (expected agent, task, fields)")
    for glob in ("agent", "task"):
        if glob in rule and (not isinstance(rule[glob], str) or not rule[glob]):
            raise ValueError(f"{where}: {glob!r} must be a non-empty glob such as 'agent-eu-*'")
    if "fields" not in rule:
        raise ValueError(f"{where}: 'fields' is missing")
    names = rule["fields"]
    if not isinstance(names, list) or not names:
        raise ValueError(f"{where}: 'fields' must be a non-empty list of field names")
    if not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"{where}: every field name must be a non-empty string")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: 'fields' names a field twice")
    return RowKeyRule(fields=tuple(names), agent=rule.get("agent"), task=rule.get("task"))


def _key_prefix(raw: str) -> str:
    if re.search(r"[\s{}]", raw):
        raise ValueError("must not contain spaces or braces (they would break hash tags)")
    return raw


def _metrics_token(raw: str) -> str:
    if not re.fullmatch(r"[\x21-\x7e]+", raw):
        raise ValueError("must be printable ASCII without spaces (it is sent as a Bearer token)")
    return raw


def _missing_checkpoint(raw: str) -> str:
    if raw not in ("404", "zero"):
        raise ValueError(f"expected 404 or zero, got {raw!r}")
    return raw


def _credentials(kind: str) -> Callable[[str], tuple[Credential, ...]]:
    """Parse API_KEYS (kind "key") or BASIC_AUTH_USERS (kind "user")."""

    def coerce(raw: str) -> tuple[Credential, ...]:
        entries = _json_entries(raw) if raw.startswith("[") else _plain_entries(raw, kind)
        credentials = tuple(_credential(entry, kind, n) for n, entry in enumerate(entries))
        secrets = [c.secret for c in credentials]
        if len(set(secrets)) != len(secrets):
            raise ValueError(f"the same {kind} is listed twice")
        return credentials

    return coerce


def _plain_entries(raw: str, kind: str) -> list[dict]:
    entries = []
    for item in raw.split(","):
        item = item.strip()
        if kind == "key":
            entries.append({"key": item})
        else:
            user, sep, password = item.partition(":")
            if not sep:
                raise ValueError("expected user:password pairs separated by commas")
            entries.append({"user": user, "password": password})
    return entries


def _json_entries(raw: str) -> list[dict]:
    try:
        entries = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"is not valid JSON ({exc})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError("expected a JSON list of objects")
    return entries


def _credential(entry: dict, kind: str, position: int) -> Credential:
    where = f"entry {position}"
    if kind == "key":
        secret = entry.get("key")
        if not isinstance(secret, str) or not secret:
            raise ValueError(f"{where}: 'key' must be a non-empty string")
        name = f"key#{position}"
    else:
        user, password = entry.get("user"), entry.get("password")
        if not isinstance(user, str) or not user or ":" in user:
            raise ValueError(f"{where}: 'user' must be a non-empty string without ':'")
        if not isinstance(password, str) or not password:
            raise ValueError(f"{where}: 'password' must be a non-empty string")
        secret, name = f"{user}:{password}", f"user:{user}"
    scopes = entry.get("scopes", list(SCOPES))
    if not isinstance(scopes, list) or not scopes or not set(scopes) <= set(SCOPES):
        raise ValueError(f"{where}: 'scopes' must be a non-empty list of {', '.join(SCOPES)}")
    agents = entry.get("agents")
    if agents is not None and (
        not isinstance(agents, list) or not all(isinstance(a, str) and a for a in agents)
    ):
        raise ValueError(f"{where}: 'agents' must be a list of agent ids")
    return Credential(
        name=name,
        secret=secret,
        scopes=frozenset(scopes),
        agents=None if agents is None else frozenset(agents),
    )


_COERCERS: dict[str, Callable[[str], object]] = {
    "redis_url": _redis_url("redis", "rediss", "unix"),
    "redis_cluster_url": _redis_url("redis", "rediss"),
    "redis_timeout": _positive_float,
    "wait_replicas": _whole_number,
    "wait_timeout_ms": _positive_int,
    "memory_high_watermark": _fraction,
    "embedded_redis_dir": str,
    "key_prefix": _key_prefix,
    "api_keys": _credentials("key"),
    "basic_auth_users": _credentials("user"),
    "auth_disabled": _flag,
    "row_key_fields": _row_key_fields,
    "row_key_rules": _row_key_rules,
    "max_batch_events": _positive_int,
    "max_content_length": _positive_int,
    "snapshot_on_suggest": _flag,
    "snapshot_prune": _flag,
    "ingest_path": _path,
    "status_path": _path,
    "public_url": str,
    "missing_checkpoint": _missing_checkpoint,
    "spec_file": str,
    "metrics_token": _metrics_token,
    "change_feed_maxlen": _whole_number,
    "row_meta_every_row": _flag,
    "ui_stale_after_s": _positive_float,
}
