"""Settings.from_env: parsing, defaults, and errors that name each setting."""

import pytest

from app.config import ConfigError, RowKeyRule, Settings

KEYS = {"API_KEYS": "k1"}


def test_defaults_match_the_documented_table():
    settings = Settings.from_env(KEYS)
    assert settings.key_prefix == "fusink"
    assert settings.row_key_fields == ("id",)
    assert settings.max_batch_events == 10_000
    assert settings.max_content_length == 16_777_216
    assert settings.snapshot_on_suggest and settings.snapshot_prune
    assert (settings.ingest_path, settings.status_path) == ("/ingest-batch", "/fuagent-sync-status")
    assert settings.missing_checkpoint == "404"
    assert settings.redis_url is None and settings.redis_cluster_url is None


def test_values_are_parsed():
    settings = Settings.from_env(
        {
            **KEYS,
            "REDIS_URL": "redis://localhost:6379/2",
            "ROW_KEY_FIELDS": "id, region",
            "MAX_BATCH_EVENTS": "50",
            "SNAPSHOT_PRUNE": "off",
            "INGEST_PATH": "/v1/batch",
            "MISSING_CHECKPOINT": "zero",
        }
    )
    assert settings.redis_url == "redis://localhost:6379/2"
    assert settings.row_key_fields == ("id", "region")
    assert settings.max_batch_events == 50
    assert settings.snapshot_prune is False
    assert settings.ingest_path == "/v1/batch"
    assert settings.missing_checkpoint == "zero"


def test_plain_api_keys_get_every_scope():
    (first, second) = Settings.from_env({"API_KEYS": "a,b"}).api_keys
    assert (first.secret, second.secret) == ("a", "b")
    assert first.scopes == {"ingest", "read", "admin"} and first.agents is None


def test_json_api_keys_carry_scopes_and_agents():
    raw = '[{"key": "x", "scopes": ["ingest"], "agents": ["agent-1"]}]'
    (credential,) = Settings.from_env({"API_KEYS": raw}).api_keys
    assert credential.scopes == {"ingest"} and credential.agents == {"agent-1"}


def test_basic_users_in_both_forms():
    plain = Settings.from_env({"BASIC_AUTH_USERS": "u:p:w,v:q"}).basic_auth_users
    assert [c.secret for c in plain] == ["u:p:w", "v:q"]
    raw = '[{"user": "u", "password": "p", "scopes": ["read"]}]'
    (user,) = Settings.from_env({"BASIC_AUTH_USERS": raw}).basic_auth_users
    assert user.secret == "u:p" and user.scopes == {"read"}


def test_every_bad_setting_is_named_at_once():
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            {
                **KEYS,
                "REDIS_URL": "http://x",
                "MAX_BATCH_EVENTS": "lots",
                "SNAPSHOT_PRUNE": "maybe",
                "MISSING_CHECKPOINT": "0",
                "API_KEYS": '[{"key": "k", "scopes": ["write"]}]',
                "INGEST_PATH": "ingest",
            }
        )
    assert set(raised.value.problems) == {
        "REDIS_URL",
        "MAX_BATCH_EVENTS",
        "SNAPSHOT_PRUNE",
        "MISSING_CHECKPOINT",
        "API_KEYS",
        "INGEST_PATH",
    }
    assert "MAX_BATCH_EVENTS" in str(raised.value)


def test_no_credential_refuses_to_serve():
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({})
    assert "API_KEYS" in raised.value.problems
    assert Settings.from_env({"AUTH_DISABLED": "1"}).auth_disabled
    assert Settings.from_env({}, serving=False).api_keys == ()


def test_both_redis_urls_conflict():
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**KEYS, "REDIS_URL": "redis://a", "REDIS_CLUSTER_URL": "redis://b"})
    assert "REDIS_CLUSTER_URL" in raised.value.problems


def test_same_path_for_both_endpoints_is_refused():
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**KEYS, "STATUS_PATH": "/ingest-batch"})
    assert "STATUS_PATH" in raised.value.problems


def test_durability_and_backpressure_settings():
    defaults = Settings.from_env(KEYS)
    assert (defaults.wait_replicas, defaults.wait_timeout_ms) == (0, 1000)
    assert defaults.memory_high_watermark == 0.9
    settings = Settings.from_env(
        {**KEYS, "WAIT_REPLICAS": "2", "WAIT_TIMEOUT_MS": "250", "MEMORY_HIGH_WATERMARK": "0"}
    )
    assert (settings.wait_replicas, settings.wait_timeout_ms) == (2, 250)
    assert settings.memory_high_watermark == 0


@pytest.mark.parametrize(
    "env",
    [
        {"WAIT_REPLICAS": "-1"},
        {"WAIT_REPLICAS": "one"},
        {"WAIT_TIMEOUT_MS": "0"},
        {"MEMORY_HIGH_WATERMARK": "1.5"},
        {"MEMORY_HIGH_WATERMARK": "90%"},
    ],
)
def test_bad_durability_settings_are_named(env):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**KEYS, **env})
    assert set(raised.value.problems) == set(env)


def test_wait_timeout_must_fit_in_the_redis_timeout():
    env = {**KEYS, "WAIT_REPLICAS": "1", "REDIS_TIMEOUT": "1", "WAIT_TIMEOUT_MS": "1000"}
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert set(raised.value.problems) == {"WAIT_TIMEOUT_MS"}
    assert Settings.from_env({**env, "WAIT_TIMEOUT_MS": "500"}).wait_timeout_ms == 500


def test_row_key_rules_are_parsed_in_order():
    raw = (
        '[{"task": "mysql-orders*", "fields": ["order_id"]},'
        ' {"agent": "agent-eu-*", "task": "*items*", "fields": ["order_id", "line_no"]}]'
    )
    settings = Settings.from_env({**KEYS, "ROW_KEY_RULES": raw})
    assert settings.row_key_rules == (
        RowKeyRule(fields=("order_id",), task="mysql-orders*"),
        RowKeyRule(fields=("order_id", "line_no"), agent="agent-eu-*", task="*items*"),
    )
    assert Settings.from_env(KEYS).row_key_rules == ()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("id", "is not valid JSON"),
        ('{"fields": ["id"]}', "expected a JSON list of objects"),
        ('[["id"]]', "expected a JSON list of objects"),
        ('[{"fields": ["id"]}, {"task": "t*"}]', "rule 1: 'fields' is missing"),
        ('[{"task": "t", "fields": []}]', "rule 0: 'fields' must be a non-empty list"),
        ('[{"task": "t", "fields": "id"}]', "rule 0: 'fields' must be a non-empty list"),
        ('[{"task": "t", "fields": ["id", ""]}]', "rule 0: every field name must be"),
        ('[{"task": "t", "fields": ["id", "id"]}]', "rule 0: 'fields' names a field twice"),
        ('[{"table": "t", "fields": ["id"]}]', "rule 0: unknown key 'table'"),
        ('[{"agent": 7, "fields": ["id"]}]', "rule 0: 'agent' must be a non-empty glob"),
        ('[{"task": "", "fields": ["id"]}]', "rule 0: 'task' must be a non-empty glob"),
    ],
)
def test_bad_row_key_rule_is_named_by_position(raw, problem):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**KEYS, "ROW_KEY_RULES": raw})
    assert set(raised.value.problems) == {"ROW_KEY_RULES"}
    assert problem in raised.value.problems["ROW_KEY_RULES"]


def test_change_feed_is_off_unless_given_a_length():
    assert Settings.from_env(KEYS).change_feed_maxlen == 0
    assert Settings.from_env({**KEYS, "CHANGE_FEED_MAXLEN": "100000"}).change_feed_maxlen == 100_000
    for bad in ("-1", "lots"):
        with pytest.raises(ConfigError) as raised:
            Settings.from_env({**KEYS, "CHANGE_FEED_MAXLEN": bad})
        assert set(raised.value.problems) == {"CHANGE_FEED_MAXLEN"}


def test_ui_stale_after_is_a_positive_number_of_seconds():
    assert Settings.from_env(KEYS).ui_stale_after_s == 300
    assert Settings.from_env({**KEYS, "UI_STALE_AFTER_S": "90"}).ui_stale_after_s == 90
    for bad in ("0", "-5", "soon"):
        with pytest.raises(ConfigError) as raised:
            Settings.from_env({**KEYS, "UI_STALE_AFTER_S": bad})
        assert set(raised.value.problems) == {"UI_STALE_AFTER_S"}
