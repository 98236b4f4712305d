"""``redis-archive jobs ...``: list failed jobs and put them back after an outage."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import click
from redis.exceptions import RedisError

from shared.connections import close_redis, get_redis
from shared.constants import ALL_QUEUES
from shared.exceptions import ConfigurationError
from shared.redrive import FailedJob, Redrive, failed_jobs, parse_since, requeue_failed

logger = logging.getLogger(__name__)


class Since(click.ParamType):  # type: ignore[type-arg]
    """``30s``, ``10m``, ``2h``, ``1d`` ago, or an ISO 8601 time."""

    name = "since"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_since(str(value))
        except ConfigurationError as exc:
            self.fail(str(exc).removeprefix("--since: "), param, ctx)


def _filters(func: Any) -> Any:
    func = click.option(
        "--error-type",
        default=None,
        metavar="NAME",
        help="Only jobs that failed with this exception (OperationalError or its dotted name).",
    )(func)
    func = click.option(
        "--since",
        type=Since(),
        default=None,
        help="Only jobs that failed since then: 30s, 10m, 2h, 1d ago, or an ISO 8601 time.",
    )(func)
    func = click.option(
        "--queue",
        "queue_name",
        required=True,
        type=click.Choice(ALL_QUEUES),
        help="The queue whose failed jobs to look at.",
    )(func)
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(func)


def _job_json(job: FailedJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "failedAt": job.failed_at.isoformat() if job.failed_at else None,
        "errorType": job.error_type,
        "error": job.error,
    }


def _settings(ctx: click.Context) -> Any:
    return ctx.find_root().obj.settings


@click.group()
def jobs() -> None:
    """Jobs in RQ's registries: list failed jobs, requeue them after an outage."""


@jobs.command()
@_filters
@click.pass_context
def failed(
    ctx: click.Context, queue_name: str, since: datetime | None, error_type: str | None, as_json: bool
) -> None:
    """List the failed jobs of a queue (newest last)."""
    conn = get_redis(_settings(ctx))
    try:
        found = failed_jobs(conn, queue_name, since=since, error=error_type)
    except RedisError as exc:
        raise click.ClickException(f"Redis is unreachable: {exc}") from None
    finally:
        close_redis(conn)
    found.sort(key=lambda job: job.failed_at.timestamp() if job.failed_at else 0.0)
    if as_json:
        click.echo(json.dumps({"queue": queue_name, "jobs": [_job_json(job) for job in found]}))
        return
    for job in found:
        when = job.failed_at.isoformat(timespec="seconds") if job.failed_at else "?"
        click.echo(f"{job.id}  {when}  {job.error_type or '?'}  {job.error[:120]}")
    click.echo(f"{len(found)} failed job(s) on {queue_name}")


@jobs.command()
@_filters
@click.option("--dry-run", is_flag=True, help="Say what would be requeued; change nothing.")
@click.option(
    "--keep-attempts",
    is_flag=True,
    help="Requeue with the attempts the jobs have left (none) instead of giving them back.",
)
@click.pass_context
def requeue(
    ctx: click.Context,
    queue_name: str,
    since: datetime | None,
    error_type: str | None,
    as_json: bool,
    dry_run: bool,
    keep_attempts: bool,
) -> None:
    """Put failed jobs back in their queue, with their attempts restored (jobs are idempotent)."""
    conn = get_redis(_settings(ctx))
    try:
        report = requeue_failed(
            conn,
            queue_name,
            since=since,
            error=error_type,
            dry_run=dry_run,
            restore_attempts=not keep_attempts,
        )
    except RedisError as exc:
        raise click.ClickException(f"Redis is unreachable: {exc}") from None
    finally:
        close_redis(conn)
    _report(report, dry_run, as_json)


def _report(report: Redrive, dry_run: bool, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "queue": report.queue,
                    "dryRun": dry_run,
                    "matched": [_job_json(job) for job in report.matched],
                    "requeued": report.requeued,
                    "skipped": [{"id": job_id, "reason": why} for job_id, why in report.skipped],
                }
            )
        )
        return
    if dry_run:
        for job in report.matched:
            click.echo(f"would requeue {job.id}  {job.error_type or '?'}")
        click.echo(f"{len(report.matched)} failed job(s) on {report.queue} would be requeued")
        return
    for job_id, why in report.skipped:
        click.echo(f"skipped {job_id}: {why}")
    click.echo(
        f"requeued {len(report.requeued)} of {len(report.matched)} matching failed job(s) on {report.queue}"
    )
