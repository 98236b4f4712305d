"""``redis-archive ha``: a local Sentinel topology for trying failover by hand."""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import click

from shared.cli.foreground import run_topology
from shared.cli.options import announced_server, server_option
from shared.stack.sentinel import HaCluster

logger = logging.getLogger(__name__)


@click.group()
def ha() -> None:
    """High availability: a master, replicas and Sentinels from the redis-server or valkey-server binary."""


@ha.command()
@click.option("--replicas", default=2, show_default=True, type=click.IntRange(1, 5))
@click.option("--sentinels", default=3, show_default=True, type=click.IntRange(1, 7))
@click.option("--master-name", default="mymaster", show_default=True)
@click.option("--down-after-ms", default=1000, show_default=True, type=click.IntRange(100, 600_000))
@click.option("--password", envvar="REDIS_PASSWORD", default=None, help="requirepass of the data nodes.")
@click.option(
    "--sentinel-password",
    envvar="REDIS_SENTINEL_PASSWORD",
    default=None,
    help="requirepass of the Sentinels.",
)
@click.option(
    "--data-dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the nodes keep config and logs (default: a temporary directory).",
)
@server_option
def up(
    replicas: int,
    sentinels: int,
    master_name: str,
    down_after_ms: int,
    password: str | None,
    sentinel_password: str | None,
    data_dir: Path | None,
    server_choice: str | None,
) -> None:
    """Run the topology in the foreground, print the environment to use it, stop on Ctrl-C."""
    found = announced_server(server_choice)
    quorum = sentinels // 2 + 1
    with tempfile.TemporaryDirectory(prefix="redis-archive-ha-") as tmp:
        cluster = HaCluster(
            found.path,
            data_dir or Path(tmp),
            master_name=master_name,
            replicas=replicas,
            sentinels=sentinels,
            quorum=quorum,
            down_after_ms=down_after_ms,
            password=password,
            sentinel_password=sentinel_password,
        )

        def describe() -> Iterator[str]:
            for node in cluster.data_nodes + cluster.sentinel_nodes:
                pid = node.proc.pid if node.proc is not None else "?"
                yield f"{node.name:<11} 127.0.0.1:{node.port}  pid {pid}"
            yield f"quorum {quorum}, down-after-milliseconds {down_after_ms}"
            yield f"logs in {cluster.directory}"
            yield "use it with:"
            yield from (f"export {name}={value}" for name, value in cluster.env().items())
            master = cluster.data_nodes[0]
            if master.proc is not None:
                yield f"try a failover: kill -9 {master.proc.pid}"

        run_topology(cluster, describe, lambda stopping: _watch(cluster, stopping))


def _watch(cluster: HaCluster, stopping: list[int]) -> None:
    """Report master changes and exited nodes until a signal arrives."""
    master = cluster.master_address()
    exited: set[str] = set()
    while not stopping:
        time.sleep(0.25)
        current = cluster.master_address()
        if current is not None and current != master:
            click.echo(f"master is now {current[0]}:{current[1]}")
            master = current
        for node in cluster.data_nodes + cluster.sentinel_nodes:
            if node.name not in exited and not node.alive():
                exited.add(node.name)
                click.echo(f"{node.name} (port {node.port}) exited")
        sys.stdout.flush()


@ha.command()
@click.pass_obj
def status(obj: object) -> None:
    """Where the Sentinels say the master is, and its replicas (needs REDIS_SENTINELS)."""
    from redis.exceptions import RedisError

    from shared.connections import close_redis, sentinel_from_settings

    settings = getattr(obj, "settings", None)
    if settings is None or not settings.sentinels:
        raise click.ClickException("REDIS_SENTINELS is not set")
    sentinel = sentinel_from_settings(settings)
    try:
        host, port = sentinel.discover_master(settings.sentinel_master)  # type: ignore[no-untyped-call]
        replicas = sentinel.discover_slaves(settings.sentinel_master)  # type: ignore[no-untyped-call]
    except RedisError as exc:
        raise click.ClickException(f"no master for {settings.sentinel_master!r}: {exc}") from None
    finally:
        for client in sentinel.sentinels:
            close_redis(client)
    click.echo(f"master   {host}:{port}")
    for replica_host, replica_port in replicas:
        click.echo(f"replica  {replica_host}:{replica_port}")
