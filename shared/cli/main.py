"""The ``redis-archive`` command: run the stack, the producer, workers, and operator tools."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
from redis.exceptions import RedisError

from shared.cli.cluster import cluster
from shared.cli.foreground import until_stopped
from shared.cli.ha import ha
from shared.cli.jobs import jobs
from shared.cli.lock import lock
from shared.cli.options import chosen_server, listen_options, server_option
from shared.cli.probe import probe
from shared.constants import ALL_QUEUES, MEMBER_QUEUE
from shared.exceptions import ArchiveError, ConfigurationError
from shared.settings import Settings
from shared.stack.local import HTTP_THREADS, Stack, monitor_argv, producer_argv, worker_argv

logger = logging.getLogger(__name__)


class Context:
    """What the group opens once for every subcommand."""

    def __init__(self, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Settings from the environment and ``--redis-url``, read on first use."""
        if self._settings is None:
            env = dict(os.environ)
            if self.redis_url:
                env["REDIS_URL"] = self.redis_url
            try:
                self._settings = Settings.from_env(env)
            except ConfigurationError as exc:
                raise click.ClickException(str(exc)) from None
        return self._settings


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--redis-url", envvar="REDIS_URL", default=None, help="Redis URL (redis://, rediss://, unix://)."
)
@click.option("--log-level", envvar="LOG_LEVEL", default="INFO", show_default=True)
@click.version_option(package_name="redis-archive")
@click.pass_context
def main(ctx: click.Context, redis_url: str | None, log_level: str) -> None:
    """Redis Archive: a producer/consumer job queue on Redis."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    ctx.obj = Context(redis_url)


def _exec(argv: list[str], env: dict[str, str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)


@main.command()
@listen_options
@click.option(
    "--workers",
    "-w",
    "http_workers",
    type=click.IntRange(1, 64),
    help="Server processes.  [default: CPUs]",
)
@click.option(
    "--threads", default=HTTP_THREADS, show_default=True, type=click.IntRange(1, 256), help="Threads each."
)
@pass_context
def serve(obj: Context, host: str, port: int, http_workers: int | None, threads: int) -> None:
    """Serve the producer API with granian (worker processes of threads, keep-alive connections)."""
    env = dict(os.environ, REDIS_URL=obj.settings.redis_url)
    if obj.settings.cluster_nodes and "RQ_KEY_PREFIX" not in env:
        # rq-dashboard shows the namespace of the producer's RQ_KEY_PREFIX: the member queue's first.
        env["RQ_KEY_PREFIX"] = _namespaces(obj)[MEMBER_QUEUE][0].tag
    _exec(producer_argv(host, port, http_workers, threads), env)


def _namespaces(obj: Context) -> dict[str, list[Any]]:
    from shared.cluster.clients import namespaces

    try:
        return namespaces(obj.settings)
    except RedisError as exc:
        raise click.ClickException(f"the cluster did not answer: {exc}") from None


def _supervise(children: list[tuple[list[str], dict[str, str]]]) -> None:
    """Run several processes until one exits or a signal arrives; stop the others; exit with its status."""
    procs = [subprocess.Popen(argv, env=env) for argv, env in children]
    with until_stopped() as stopping:
        while not stopping and all(proc.poll() is None for proc in procs):
            time.sleep(0.2)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait() for proc in procs]
    sys.exit(next((code for code in codes if code), 0))


@main.command()
@click.argument("queues", nargs=-1)
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option(
    "--worker-class",
    "-w",
    default=None,
    help="Dotted path of the RQ worker class (default consumer.worker.FastWorker).",
)
@click.option(
    "--namespace",
    default=None,
    help="On a Redis Cluster: serve only this namespace (e.g. {member-2}); default: each of QUEUES'.",
)
@pass_context
def worker(
    obj: Context, queues: tuple[str, ...], burst: bool, worker_class: str | None, namespace: str | None
) -> None:
    """Run a worker on QUEUES (default: every queue); the same as plain ``rq worker``.

    On a Redis Cluster a worker process serves one namespace: one process per namespace of
    QUEUES is started (with RQ_KEY_PREFIX and RQ_CONNECTION_CLASS set), or only ``--namespace``.
    """
    env = dict(os.environ, REDIS_URL=obj.settings.redis_url)
    if not obj.settings.cluster_nodes:
        if namespace is not None:
            raise click.ClickException("--namespace needs a Redis Cluster (REDIS_CLUSTER_NODES)")
        _exec(worker_argv(queues or ALL_QUEUES, worker_class=worker_class, burst=burst), env)
    from shared.cluster.clients import namespace_env

    plan = _namespaces(obj)
    unknown = [queue for queue in queues if queue not in plan]
    if unknown:
        raise click.ClickException(
            f"no namespaces for queue(s) {', '.join(unknown)}: known {', '.join(plan)}"
        )
    chosen = [(queue, ns.tag) for queue in (queues or tuple(plan)) for ns in plan[queue]]
    if namespace is not None:
        chosen = [(queue, tag) for queue, tag in chosen if tag == namespace]
        if not chosen:
            known = ", ".join(ns.tag for spaces in plan.values() for ns in spaces)
            raise click.ClickException(f"no namespace {namespace!r} among {known}")
    children = [
        (worker_argv([queue], worker_class=worker_class, burst=burst), {**env, **namespace_env(tag)})
        for queue, tag in chosen
    ]
    if len(children) == 1:
        _exec(*children[0])
    for (_, tag), (argv, _) in zip(chosen, children, strict=True):
        click.echo(f"worker for namespace {tag}: {' '.join(argv[1:])}", err=True)
    _supervise(children)


@main.command()
@pass_context
def monitor(obj: Context) -> None:
    """Re-queue the jobs of workers whose heartbeat stopped (abandoned-job recovery).

    On a Redis Cluster one monitor process per namespace is started.
    """
    env = dict(os.environ, REDIS_URL=obj.settings.redis_url)
    if not obj.settings.cluster_nodes:
        _exec(monitor_argv(), env)
    from shared.cluster.clients import namespace_env

    tags = [ns.tag for spaces in _namespaces(obj).values() for ns in spaces]
    _supervise([(monitor_argv(), {**env, **namespace_env(tag)}) for tag in tags])


@main.command()
@listen_options
@click.option("--workers", "-n", default=2, show_default=True, type=click.IntRange(0, 32))
@click.option(
    "--plain-workers",
    default=0,
    show_default=True,
    type=click.IntRange(0, 32),
    help="Plain `rq worker -c consumer.settings -S json` processes beside the fast ones.",
)
@click.option(
    "--data-dir",
    default="var",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where a private Redis keeps its append-only file.",
)
@server_option
@pass_context
def up(
    obj: Context,
    host: str,
    port: int,
    workers: int,
    plain_workers: int,
    data_dir: Path,
    server_choice: str | None,
) -> None:
    """Run Redis (or Valkey), the producer and workers in the foreground; Ctrl-C stops them all.

    Children that exit are started again (and ``up`` says so).
    """
    _ = obj.settings  # fail early, with a message, on a malformed environment
    server = None if obj.redis_url else chosen_server(server_choice)
    stack = Stack(
        redis_url=obj.redis_url,
        server=server,
        host=host,
        port=port,
        workers=workers,
        plain_workers=plain_workers,
        data_dir=data_dir,
        say=lambda line: click.echo(line),
    )
    try:
        code = stack.run()
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


main.add_command(cluster)
main.add_command(ha)
main.add_command(jobs)
main.add_command(lock)
main.add_command(probe)


if __name__ == "__main__":
    main()
