"""Foreground commands that run until Ctrl-C or SIGTERM (``ha up``, ``cluster up``, ``worker``)."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Protocol

import click

from shared.exceptions import ArchiveError


@contextmanager
def until_stopped() -> Iterator[list[int]]:
    """Catch SIGINT and SIGTERM for the block; yields the list the signals received are added to."""
    stopping: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Topology(Protocol):
    """Servers started together and stopped together (a Sentinel set-up, a local cluster)."""

    directory: Path

    def start(self) -> None: ...

    def stop(self) -> None: ...


def run_topology(
    topology: Topology,
    describe: Callable[[], Iterable[str]],
    watch: Callable[[list[int]], None] | None = None,
) -> None:
    """Start ``topology``, print ``describe()``'s lines and ``ready``, keep it up until a signal.

    ``watch(stopping)`` runs while it is up (returning once ``stopping`` is not empty); the
    servers are stopped whatever happens. A topology that does not start is a click error
    naming its logs.
    """
    with until_stopped() as stopping:
        try:
            try:
                topology.start()
            except ArchiveError as exc:
                raise click.ClickException(f"{exc} (logs in {topology.directory})") from None
            for line in describe():
                click.echo(line)
            click.echo("ready; Ctrl-C stops everything")
            sys.stdout.flush()
            if watch is not None:
                watch(stopping)
            while not stopping:
                time.sleep(0.25)
        finally:
            click.echo("stopping")
            topology.stop()
    click.echo("stopped")
