"""``redis-archive probe``: key breakdowns, length sweeps, capacity predictions and fills, memory watch."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
from redis import Redis
from redis.exceptions import RedisError

from shared.connections import close_redis, get_redis, redis_from_url
from shared.exceptions import ArchiveError
from shared.memory.fill import capacity, check_fill_target, sweep, watch
from shared.memory.keys import probe_keys

logger = logging.getLogger(__name__)


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data) if as_json else text)


def _connect(ctx: click.Context, url: str | None) -> Redis:
    from shared.cli.main import Context

    obj = ctx.ensure_object(Context)
    if url:
        conn = redis_from_url(url, obj.settings, health_check_interval=0)
    else:
        # The queue's Redis: REDIS_URL, or the master the Sentinels name.
        conn = get_redis(obj.settings, health_check_interval=0)
    ctx.call_on_close(lambda: close_redis(conn))
    return conn


def _queue(ctx: click.Context) -> Redis | None:
    from shared.cli.main import Context

    obj = ctx.ensure_object(Context)
    conn = get_redis(obj.settings, socket_timeout=2, socket_connect_timeout=2)
    ctx.call_on_close(lambda: close_redis(conn))
    return conn


@click.group()
def probe() -> None:
    """Memory probes: what keys cost, and how many more fit before OOM."""


url_option = click.option("--url", default=None, help="Redis to probe (default: REDIS_URL).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


@probe.command("key")
@url_option
@click.option("--key", "keys", multiple=True, help="An existing key to explain (repeatable).")
@click.option(
    "--set",
    "pairs",
    nargs=2,
    multiple=True,
    metavar="KEY VALUE",
    help="Write KEY VALUE into the scratch db and explain it.",
)
@click.option(
    "--ttl", type=click.IntRange(1), default=None, help="TTL for --set keys (adds the expires entry)."
)
@click.option("--scratch-db", type=click.IntRange(0), default=15, show_default=True)
@json_option
@click.pass_context
def key_cmd(
    ctx: click.Context,
    url: str | None,
    keys: tuple[str, ...],
    pairs: tuple[tuple[str, str], ...],
    ttl: int | None,
    scratch_db: int,
    as_json: bool,
) -> None:
    """Explain MEMORY USAGE of keys byte by byte (dict entry, SDS headers, encodings, jemalloc classes)."""
    if not keys and not pairs:
        raise click.UsageError("give --key KEY or --set KEY VALUE")
    conn = _connect(ctx, url)
    try:
        rows = probe_keys(conn, keys=list(keys), pairs=list(pairs), ttl=ttl, scratch_db=scratch_db)
    except (ArchiveError, RedisError) as exc:
        raise click.ClickException(str(exc)) from None
    lines = []
    for row in rows:
        lines.append(
            f"{row['key']!r}: MEMORY USAGE {row['memory_usage']} = model {row['model_memory_usage']} "
            f"(logical {row['logical_bytes']}, overhead {row['memory_usage_overhead']}), "
            f"encoding {row['encoding']}, charged {row['charged_bytes']}"
        )
        for part in row["parts"]:
            lines.append(
                f"    {part['name']:<22} asks {part['requested']:>5}  charged {part['charged']:>5}  "
                f"in MEMORY USAGE {part['in_memory_usage']:>5}  {part['note']}"
            )
    _emit({"keys": rows}, as_json, "\n".join(lines))


@probe.command("sweep")
@url_option
@click.option("--what", type=click.Choice(["key", "value"]), default="key", show_default=True)
@click.option("--from", "start", type=click.IntRange(1, 4096), default=1, show_default=True)
@click.option("--to", "stop", type=click.IntRange(1, 4096), default=64, show_default=True)
@click.option("--scratch-db", type=click.IntRange(0), default=15, show_default=True)
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a chart: NAME.png and NAME.svg.",
)
@json_option
@click.pass_context
def sweep_cmd(
    ctx: click.Context,
    url: str | None,
    what: str,
    start: int,
    stop: int,
    scratch_db: int,
    chart: Path | None,
    as_json: bool,
) -> None:
    """Key (or value) length from --from to --to: MEMORY USAGE and bytes charged, in steps."""
    if start > stop:
        raise click.BadParameter("--from must not exceed --to")
    conn = _connect(ctx, url)
    try:
        with click.progressbar(length=stop - start + 1, label=f"{what} lengths", file=sys.stderr) as bar:
            rows = sweep(conn, what=what, start=start, stop=stop, scratch_db=scratch_db, progress=bar.update)
    except (ArchiveError, RedisError) as exc:
        raise click.ClickException(str(exc)) from None
    files: list[str] = []
    if chart is not None:
        from shared.memory.charts import sweep_chart

        files = [str(p) for p in sweep_chart(rows, what, chart)]
    text = [f"{'length':>6} {'MEMORY USAGE':>12} {'model':>6} {'charged':>8} {'model':>6}  encoding"]
    for row in rows:
        text.append(
            f"{row['length']:>6} {row['memory_usage']:>12} {row['model_memory_usage']:>6} "
            f"{row['used_memory_delta']:>8} {row['model_charged']:>6}  {row['encoding']}"
        )
    text += [f"chart: {f}" for f in files]
    _emit({"what": what, "rows": rows, "charts": files}, as_json, "\n".join(text))


@probe.command("capacity")
@url_option
@click.option("--key-pattern", required=True, help="Key names with {i} counting 1, 2, 3 ... e.g. 'key{i}'.")
@click.option("--value", required=True, help="The value every key gets.")
@click.option("--ttl", type=click.IntRange(1), default=None, help="SET ... EX SECONDS.")
@click.option(
    "--maxmemory",
    type=click.IntRange(1),
    default=None,
    help="Predict for this limit (set on the server during --fill).",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 100),
    default=None,
    help="Commands per pipeline (default: 1 to predict, up to 100 to fill).",
)
@click.option(
    "--fill", "do_fill", is_flag=True, help="Run the experiment: fill until the first OOM, then clean up."
)
@click.option("--force", is_flag=True, help="Fill even if the database is not empty.")
@click.option("--allow-queue-redis", is_flag=True, help="Allow --fill on the queue's own Redis (REDIS_URL).")
@click.option(
    "--allocator",
    type=click.Choice(["libc", "jemalloc", "jemalloc-q8"]),
    default=None,
    help="Model this allocator instead of the server's mem_allocator (jemalloc: quantum 16 as Debian "
    "builds it; jemalloc-q8: as Redis and Valkey vendor it).",
)
@json_option
@click.pass_context
def capacity_cmd(
    ctx: click.Context,
    url: str | None,
    key_pattern: str,
    value: str,
    ttl: int | None,
    maxmemory: int | None,
    batch: int | None,
    do_fill: bool,
    force: bool,
    allow_queue_redis: bool,
    allocator: str | None,
    as_json: bool,
) -> None:
    """Predict how many more SET key{i} value [EX ttl] succeed before OOM; --fill checks it for real."""
    conn = _connect(ctx, url)
    queue = _queue(ctx) if do_fill else None
    try:
        if do_fill:
            # Refuse before anything else, so the user reads why rather than a prediction error.
            check_fill_target(conn, queue=queue, allow_queue=allow_queue_redis, force=force)
            expected = capacity(
                conn, key_pattern, value, ttl, maxmemory=maxmemory, batch=batch, allocator=allocator
            )["high"]
            with click.progressbar(length=max(1, expected), label="filling", file=sys.stderr) as bar:
                result = capacity(
                    conn, key_pattern, value, ttl, maxmemory=maxmemory, run_fill=True, force=force,
                    queue=queue, allow_queue=allow_queue_redis, batch=batch, progress=bar.update,
                    allocator=allocator,
                )  # fmt: skip
        else:
            result = capacity(
                conn, key_pattern, value, ttl, maxmemory=maxmemory, batch=batch, allocator=allocator
            )
    except (ArchiveError, RedisError) as exc:
        raise click.ClickException(str(exc)) from None
    text = [
        f"{result['server']} ({result['allocator']}), maxmemory {result['maxmemory']}, "
        f"baseline {result['baseline']}, {result['per_key']} bytes a key",
        f"predicted keys: {result['predicted_keys']}  interval [{result['low']}, {result['high']}]",
        f"why: {result['reason']}",
    ]
    if do_fill:
        before, after = result["before"], result["after"]
        text += [
            f"actual keys: {result['actual_keys']} "
            f"(predicted {result['predicted_keys']}, error {result['error']:+d})",
            f"used_memory {before['used_memory']} -> {after['used_memory']}, "
            f"rss {before['used_memory_rss']} -> {after['used_memory_rss']}, "
            f"fragmentation {before['mem_fragmentation_ratio']} -> {after['mem_fragmentation_ratio']}",
        ]
    _emit(result, as_json, "\n".join(text))


@probe.command("watch")
@url_option
@click.option(
    "--interval", type=click.FloatRange(0.1), default=5.0, show_default=True, help="Seconds between samples."
)
@click.option("--count", type=click.IntRange(1), default=None, help="Stop after this many samples.")
@json_option
@click.pass_context
def watch_cmd(ctx: click.Context, url: str | None, interval: float, count: int | None, as_json: bool) -> None:
    """Sample INFO memory; warn at 80% and 90% of maxmemory and on an evicting policy."""
    conn = _connect(ctx, url)
    try:
        for sample in watch(conn, interval, count):
            if as_json:
                click.echo(json.dumps(sample))
            else:
                pct = f"{sample['percent']}%" if sample["percent"] is not None else "no maxmemory"
                click.echo(
                    f"used_memory {sample['used_memory']} ({pct}), rss {sample['used_memory_rss']}, "
                    f"fragmentation {sample['mem_fragmentation_ratio']}, policy {sample['maxmemory_policy']}"
                )
            for warning in sample["warnings"]:
                click.secho(f"WARNING: {warning}", fg="red", bold="EVICTING" in warning, err=True)
    except (ArchiveError, RedisError) as exc:
        raise click.ClickException(str(exc)) from None
