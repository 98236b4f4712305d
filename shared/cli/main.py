"""The ``redis-archive`` command: run the stack, the producer, workers, and operator tools."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from shared.cli.ha import ha
from shared.cli.jobs import jobs
from shared.cli.lock import lock
from shared.cli.probe import probe
from shared.constants import ALL_QUEUES
from shared.exceptions import ArchiveError, ConfigurationError
from shared.settings import Settings
from shared.stack.local import Stack, monitor_argv, producer_argv, worker_argv

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
@click.option("--host", envvar="HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="PORT", default=1111, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", "-w", "http_workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 256), help="Threads each.")
@pass_context
def serve(obj: Context, host: str, port: int, http_workers: int, threads: int) -> None:
    """Serve the producer API with granian (worker processes of threads, keep-alive connections)."""
    env = dict(os.environ, REDIS_URL=obj.settings.redis_url)
    _exec(producer_argv(host, port, http_workers, threads), env)


@main.command()
@click.argument("queues", nargs=-1)
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option(
    "--worker-class",
    "-w",
    default=None,
    help="Dotted path of the RQ worker class (default consumer.worker.FastWorker).",
)
@pass_context
def worker(obj: Context, queues: tuple[str, ...], burst: bool, worker_class: str | None) -> None:
    """Run a worker on QUEUES (default: every queue); the same as plain ``rq worker``."""
    env = dict(os.environ, REDIS_URL=obj.settings.redis_url)
    _exec(worker_argv(queues or ALL_QUEUES, worker_class=worker_class, burst=burst), env)


@main.command()
@pass_context
def monitor(obj: Context) -> None:
    """Re-queue the jobs of workers whose heartbeat stopped (abandoned-job recovery)."""
    env = dict(os.environ, REDIS_URL=obj.settings.redis_url)
    _exec(monitor_argv(), env)


@main.command()
@click.option("--host", envvar="HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="PORT", default=1111, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", "-n", default=2, show_default=True, type=click.IntRange(0, 32))
@click.option(
    "--plain-workers",
    default=0,
    show_default=True,
    type=click.IntRange(0, 32),
    help="Stock `rq worker -c consumer.settings -S json` processes beside the fast ones.",
)
@click.option(
    "--data-dir",
    default="var",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where a private Redis keeps its append-only file.",
)
@pass_context
def up(obj: Context, host: str, port: int, workers: int, plain_workers: int, data_dir: Path) -> None:
    """Run Redis, the producer and workers in the foreground; Ctrl-C stops them all.

    Children that exit are started again (and ``up`` says so).
    """
    _ = obj.settings  # fail early, with a message, on a malformed environment
    stack = Stack(
        redis_url=obj.redis_url,
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


main.add_command(ha)
main.add_command(jobs)
main.add_command(lock)
main.add_command(probe)


if __name__ == "__main__":
    main()
