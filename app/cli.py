"""Operator commands: `flask spec [--check]`; `flask streams list|show|reset|snapshot|drop`."""

import contextlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import click
from flask import Flask
from flask.cli import ScriptInfo

from . import create_app, keys, rows, spec
from .config import ConfigError, Settings
from .errors import StoreUnavailable
from .schemas import StreamSchema
from .store import Store


def cli_app() -> Flask:
    """The app a command works on: the test's, else one built from the environment.

    Commands need no HTTP credentials, so they skip that start-up rule.
    """
    info = click.get_current_context().find_object(ScriptInfo)
    if info is not None and info.create_app is not None:
        return info.load_app()
    try:
        return create_app(Settings.from_env(os.environ, serving=False))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("spec")
@click.option("--check", is_flag=True, help="Fail if the file is not up to date.")
@click.option(
    "--output", default="openapi.json", show_default=True, type=click.Path(dir_okay=False)
)
def spec_command(check: bool, output: str) -> None:
    """Write the OpenAPI document (only when it changed), or --check it."""
    content = spec.render(cli_app())
    if check:
        if not os.path.exists(output) or Path(output).read_bytes() != content:
            raise click.ClickException(f"{output} is stale: run `flask spec` and commit it.")
        click.echo(f"{output} is up to date.")
    elif spec.write(output, content):
        click.echo(f"wrote {output}")
    else:
        click.echo(f"{output} unchanged")


stream_schema = StreamSchema()


def cli_store() -> Store:
    """The Store of the app a command works on."""
    return cli_app().extensions["fusink"].get_store()


@click.group("streams")
def streams_command() -> None:
    """Inspect and steer streams: list, show, reset, snapshot, drop.

    These commands talk to Redis directly (REDIS_URL, KEY_PREFIX, ...): they need
    no HTTP credentials.
    """


def json_option(command):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(command)


def yes_option(command):
    return click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(command)


@streams_command.command("list")
@click.option("--limit", type=click.IntRange(1), help="At most this many streams.")
@json_option
def list_command(limit: int | None, as_json: bool) -> None:
    """List streams, most recently updated first."""
    store, found, after = cli_store(), [], None
    while limit is None or len(found) < limit:
        with redis_errors():
            page, after = store.list_streams(1000, after)
        found += page
        if after is None:
            break
    streams = [stream_schema.dump(stream) for stream in found[:limit]]
    if as_json:
        click.echo(json.dumps(streams, ensure_ascii=False, indent=2))
        return
    table = [
        (
            s["agent_id"],
            s["task_id"],
            _text(s["checkpoint"]),
            str(s["rows"]),
            str(s["events"]),
            _time(s.get("updated_at")),
            s["snapshot"]["state"],
        )
        for s in streams
    ]
    header = ("AGENT", "TASK", "CHECKPOINT", "ROWS", "EVENTS", "UPDATED (UTC)", "SNAPSHOT")
    _echo_table(header, table)
    click.echo(f"{len(streams)} stream{'' if len(streams) == 1 else 's'}")


@streams_command.command("show")
@click.argument("agent_id")
@click.argument("task_id")
@json_option
def show_command(agent_id: str, task_id: str, as_json: bool) -> None:
    """Show one stream: checkpoint, counters, row-key fields, snapshot state, Redis keys."""
    stream = stream_schema.dump(_known_stream(cli_store(), agent_id, task_id))
    if as_json:
        click.echo(json.dumps(stream, ensure_ascii=False, indent=2))
        return
    tag, prefix = stream["tag"], cli_store().prefix
    lines = [
        ("agent_id", agent_id),
        ("task_id", task_id),
        ("checkpoint", _text(stream["checkpoint"])),
        ("updated_at", _time(stream.get("updated_at"))),
        ("events", str(stream["events"])),
        ("batches", str(stream["batches"])),
        ("rows", str(stream["rows"])),
        ("row_key_fields", _text(stream["row_key_fields"] and ", ".join(stream["row_key_fields"]))),
    ]
    for name, value in stream["snapshot"].items():
        shown = _time(value) if name.endswith("_at") else _text(value)
        lines.append((f"snapshot.{name}", shown))
    lines += [
        ("checkpoint key", keys.checkpoint_key(prefix, tag)),
        ("rows key", keys.rows_key(prefix, tag)),
        ("row-meta key", keys.row_meta_key(prefix, tag)),
    ]
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        click.echo(f"{name.ljust(width)}  {value}")


@streams_command.command("reset")
@click.argument("agent_id")
@click.argument("task_id")
@click.option(
    "--index",
    type=click.IntRange(0, rows.MAX_INDEX),
    help="Set the checkpoint to this index: the agent resumes after it.",
)
@click.option(
    "--remove", is_flag=True, help="Remove the checkpoint: the agent starts from the beginning."
)
@yes_option
@json_option
def reset_command(
    agent_id: str, task_id: str, index: int | None, remove: bool, yes: bool, as_json: bool
) -> None:
    """Set a stream's checkpoint (--index N) or remove it (--remove); rows stay."""
    if (index is None) == (not remove):
        raise click.UsageError("give exactly one of --index N and --remove")
    store = cli_store()
    stream = _known_stream(store, agent_id, task_id)
    change = "remove its checkpoint" if remove else f"set its checkpoint to {index}"
    _confirm(f"Stream {agent_id!r}/{task_id!r} (checkpoint {stream.get('index')}): {change}?", yes)
    with redis_errors():
        done = store.set_checkpoint(agent_id, task_id, index)
    if not done:
        raise _unknown(agent_id, task_id)
    if as_json:
        click.echo(json.dumps({"agent_id": agent_id, "task_id": task_id, "checkpoint": index}))
    else:
        click.echo(f"{agent_id}/{task_id}: checkpoint {'removed' if remove else index}")


@streams_command.command("snapshot")
@click.argument("agent_id")
@click.argument("task_id")
@json_option
def snapshot_command(agent_id: str, task_id: str, as_json: bool) -> None:
    """Ask the agent for a snapshot: its next batch is answered snapshot_needed: true."""
    store = cli_store()
    with redis_errors():
        state = store.set_snapshot_requested(agent_id, task_id, time.time_ns() // 1_000_000)
    if state is None:
        raise _unknown(agent_id, task_id)
    if as_json:
        stream = stream_schema.dump(_known_stream(store, agent_id, task_id))
        click.echo(json.dumps(stream, ensure_ascii=False, indent=2))
    elif state == "pruning":
        click.echo(f"{agent_id}/{task_id}: snapshot requested; it follows the prune under way")
    else:
        click.echo(f"{agent_id}/{task_id}: snapshot requested on the next batch")


@streams_command.command("drop")
@click.argument("agent_id")
@click.argument("task_id")
@yes_option
@json_option
def drop_command(agent_id: str, task_id: str, yes: bool, as_json: bool) -> None:
    """Drop a stream: its checkpoint and rows; the agent then starts over."""
    store = cli_store()
    stream = _known_stream(store, agent_id, task_id)
    _confirm(f"Drop stream {agent_id!r}/{task_id!r} and its {stream['rows']} rows?", yes)
    with redis_errors():
        dropped = store.delete_stream(agent_id, task_id)
    if dropped is None:
        raise _unknown(agent_id, task_id)
    if as_json:
        body = {"agent_id": agent_id, "task_id": task_id, "rows_deleted": dropped}
        click.echo(json.dumps(body, ensure_ascii=False))
    else:
        click.echo(f"{agent_id}/{task_id}: dropped ({dropped} rows)")


@contextlib.contextmanager
def redis_errors():
    """Turn StoreUnavailable into a one-line error (exit 1)."""
    try:
        yield
    except StoreUnavailable as exc:
        raise click.ClickException(f"Redis is unavailable: {exc}") from None


def _known_stream(store: Store, agent_id: str, task_id: str) -> dict:
    with redis_errors():
        stream = store.get_stream(agent_id, task_id)
    if stream is None:
        raise _unknown(agent_id, task_id)
    return stream


def _unknown(agent_id: str, task_id: str) -> click.ClickException:
    return click.ClickException(f"no stream with agent_id {agent_id!r} and task_id {task_id!r}")


def _confirm(question: str, yes: bool) -> None:
    if not yes:
        click.confirm(question, abort=True)


def _text(value) -> str:
    return "-" if value is None else str(value)


def _time(ms) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool):
        return _text(ms)
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _echo_table(header: tuple, table: list[tuple]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())
