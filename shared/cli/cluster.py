"""``redis-archive cluster``: a local Redis Cluster to try the queue on, and where the namespaces live."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import click
from redis.exceptions import RedisError

from shared.cli.foreground import run_topology
from shared.cli.options import announced_server, server_option
from shared.stack.cluster import LocalCluster


@click.group()
def cluster() -> None:
    """Redis Cluster: a local cluster, and the queue's namespaces on it."""


@cluster.command()
@click.option("--masters", default=3, show_default=True, type=click.IntRange(3, 9))
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(0, 3), help="Per master.")
@click.option("--node-timeout-ms", default=1000, show_default=True, type=click.IntRange(100, 600_000))
@click.option(
    "--data-dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the nodes keep config, append-only files and logs (default: a temporary directory).",
)
@server_option
def up(
    masters: int, replicas: int, node_timeout_ms: int, data_dir: Path | None, server_choice: str | None
) -> None:
    """Run a local cluster in the foreground, print the environment to use it, stop on Ctrl-C."""
    found = announced_server(server_choice)
    with tempfile.TemporaryDirectory(prefix="redis-archive-cluster-") as tmp:
        local = LocalCluster(
            found.path,
            data_dir or Path(tmp),
            masters=masters,
            replicas=replicas,
            node_timeout_ms=node_timeout_ms,
        )

        def describe() -> Iterator[str]:
            for node in local.nodes:
                pid = node.proc.pid if node.proc is not None else "?"
                role = local.client(node).info("replication").get("role")
                yield f"{node.name:<8} 127.0.0.1:{node.port}  {role:<6}  pid {pid}"
            yield f"logs in {local.directory}"
            yield "use it with:"
            yield from (f"export {name}={value}" for name, value in local.env.items())
            yield "export QUEUE_NAMESPACES=member=3"

        run_topology(local, describe)


@cluster.command()
@click.pass_obj
def status(obj: object) -> None:
    """The masters and their slots, and where each queue's namespaces live (needs REDIS_CLUSTER_NODES)."""
    from shared.cluster.clients import cluster_map, namespaces

    settings = getattr(obj, "settings", None)
    if settings is None or not settings.cluster_nodes:
        raise click.ClickException("REDIS_CLUSTER_NODES is not set")
    try:
        slots = cluster_map(settings)
        slots.invalidate()
        for (host, port), ranges, copies in slots.masters():
            spans = ", ".join(f"{start}-{end}" for start, end in ranges)
            replicas = ", ".join(f"{h}:{p}" for h, p in copies) or "none"
            click.echo(f"master  {host}:{port}  slots {spans}  replicas {replicas}")
        for queue, spaces in namespaces(settings).items():
            for namespace in spaces:
                host, port = slots.owner(namespace.slot)
                click.echo(
                    f"queue {queue:<8} namespace {namespace.tag:<14} slot {namespace.slot:>5}"
                    f"  on {host}:{port}"
                )
    except RedisError as exc:
        raise click.ClickException(f"the cluster did not answer: {exc}") from None
