"""Operator commands: `flask spec [--check]`."""

import os
from pathlib import Path

import click
from flask import Flask
from flask.cli import ScriptInfo

from . import create_app, spec
from .config import ConfigError, Settings


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
