"""``/dashboard/redis``: memory, capacity, queue depths, throughput and lock statistics.

Charts are SVG drawn here on the server: the page loads nothing from outside the app.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, render_template, url_for
from markupsafe import Markup, escape
from redis.exceptions import RedisError
from rq import VERSION as RQ_VERSION
from rq_dashboard.version import VERSION as RQ_DASHBOARD_VERSION

from shared import stats
from shared.connections import describe
from shared.connections.eviction import SAFE_POLICIES
from shared.connections.identity import server_identity
from shared.constants import MEMBER_QUEUE
from shared.spaces import Space

from .capacity import job_capacity
from .dashboard import check_access
from .state import ArchiveState, get_state

logger = logging.getLogger(__name__)

bp = Blueprint("dashboard_redis", __name__, url_prefix="/dashboard/redis")
bp.before_request(check_access)

CHART_WIDTH = 720
CHART_HEIGHT = 180
MARGIN_LEFT = 70
MARGIN_BOTTOM = 22


def human_bytes(value: float) -> str:
    """``1536`` -> ``1.50 KiB``."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} TiB"  # pragma: no cover


@dataclass(frozen=True)
class Verdict:
    """Whether the eviction policy keeps queued jobs safe, and why."""

    safe: bool
    text: str


def eviction_verdict(policy: str, maxmemory: int) -> Verdict:
    """Only ``noeviction`` keeps Redis from deleting queued jobs when memory runs out."""
    if policy in SAFE_POLICIES:
        if maxmemory == 0:
            return Verdict(
                True, "safe: noeviction; no maxmemory is set, so Redis grows until the machine runs out"
            )
        return Verdict(True, "safe: noeviction; when full, Redis refuses new jobs (OOM) and deletes none")
    return Verdict(
        False, f"UNSAFE: {policy} lets Redis delete keys, queued jobs included, when memory is full"
    )


def _axis_labels(top: float, fmt: Any) -> list[tuple[float, str]]:
    return [(fraction, fmt(top * fraction)) for fraction in (0.0, 0.5, 1.0)]


def _frame(title: str, top: float, fmt: Any, body: str, left_label: str, right_label: str) -> Markup:
    inner_h = CHART_HEIGHT - MARGIN_BOTTOM - 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" '
        f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{MARGIN_LEFT}" y="10" width="{CHART_WIDTH - MARGIN_LEFT - 10}" height="{inner_h}" '
        'fill="#fafafa" stroke="#ccc"/>',
    ]
    for fraction, label in _axis_labels(top, fmt):
        y = 10 + inner_h * (1 - fraction)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{CHART_WIDTH - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
        )
        parts.append(f'<text x="{MARGIN_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
    parts.append(body)
    parts.append(f'<text x="{MARGIN_LEFT}" y="{CHART_HEIGHT - 6}">{escape(left_label)}</text>')
    parts.append(
        f'<text x="{CHART_WIDTH - 10}" y="{CHART_HEIGHT - 6}" text-anchor="end">{escape(right_label)}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def memory_chart(samples: list[dict[str, Any]], now: float, maxmemory: int) -> Markup:
    """Used memory over the last hour as an SVG line; maxmemory as a dashed line when it fits."""
    start = now - stats.STATS_WINDOW_SECONDS
    peak = max((s["used_memory"] for s in samples), default=0)
    top = max(peak * 1.25, 1024 * 1024)
    if maxmemory and maxmemory <= top * 2:
        top = max(top, maxmemory * 1.05)
    inner_w = CHART_WIDTH - MARGIN_LEFT - 10
    inner_h = CHART_HEIGHT - MARGIN_BOTTOM - 10

    def xy(t: float, v: float) -> str:
        x = MARGIN_LEFT + inner_w * min(max((t - start) / stats.STATS_WINDOW_SECONDS, 0.0), 1.0)
        y = 10 + inner_h * (1 - min(v / top, 1.0))
        return f"{x:.1f},{y:.1f}"

    body = []
    if maxmemory and maxmemory <= top:
        y = 10 + inner_h * (1 - maxmemory / top)
        body.append(
            f'<line x1="{MARGIN_LEFT}" x2="{CHART_WIDTH - 10}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#c0392b" stroke-dasharray="6 4"/>'
            f'<text x="{CHART_WIDTH - 14}" y="{y - 4:.1f}" text-anchor="end" fill="#c0392b">maxmemory</text>'
        )
    points = " ".join(xy(s["t"], s["used_memory"]) for s in samples)
    if samples:
        body.append(
            f'<polyline id="memory-line" fill="none" stroke="#2c7be5" stroke-width="2" points="{points}"/>'
        )
        for s in samples[-1:]:
            x, y = xy(s["t"], s["used_memory"]).split(",")
            body.append(f'<circle cx="{x}" cy="{y}" r="3" fill="#2c7be5"/>')
    else:
        body.append(
            f'<text x="{CHART_WIDTH / 2}" y="{CHART_HEIGHT / 2}" text-anchor="middle">no samples yet</text>'
        )
    return _frame("used memory, last hour", top, human_bytes, "".join(body), "60 min ago", "now")


def throughput_chart(per_minute: list[tuple[int, int]]) -> Markup:
    """Jobs finished per minute over the last hour as SVG bars."""
    top = max((count for _, count in per_minute), default=0)
    top = max(top, 1) * 1.2
    inner_w = CHART_WIDTH - MARGIN_LEFT - 10
    inner_h = CHART_HEIGHT - MARGIN_BOTTOM - 10
    width = inner_w / max(len(per_minute), 1)
    bars = []
    for i, (_, count) in enumerate(per_minute):
        if count:
            h = inner_h * count / top
            bars.append(
                f'<rect x="{MARGIN_LEFT + i * width + 1:.1f}" y="{10 + inner_h - h:.1f}" '
                f'width="{max(width - 2, 1):.1f}" height="{h:.1f}" fill="#27ae60">'
                f"<title>{count}</title></rect>"
            )
    return _frame(
        "jobs finished per minute", top, lambda v: f"{v:.0f}", "".join(bars), "60 min ago", "this minute"
    )


def gather(state: ArchiveState, now: float | None = None) -> dict[str, Any]:
    """Every figure the page shows: memory from the queue's Redis, queues summed over namespaces."""
    now = now or time.time()
    conn = state.redis
    spaces = state.all_spaces()
    home = Space(state.home_keys, conn)
    info = conn.info("memory")
    maxmemory = int(info.get("maxmemory", 0))
    policy = str(info.get("maxmemory_policy", "?"))
    samples = stats.memory_samples(conn, now=now, keys=state.home_keys)
    per_minute = stats.finished_per_minute_of(spaces, 60, now=now)
    depths = stats.depths_of(spaces)
    # Job sizes are measured in the member queue's first namespace (the only one off a cluster).
    sample = state.spaces_of(MEMBER_QUEUE)[0]
    last_hour = sum(count for _, count in per_minute)
    return {
        "server": server_identity(conn),
        "memory": {
            "used_memory": int(info.get("used_memory", 0)),
            "used_memory_peak": int(info.get("used_memory_peak", 0)),
            "used_memory_rss": int(info.get("used_memory_rss", 0)),
            "mem_fragmentation_ratio": float(info.get("mem_fragmentation_ratio", 0.0)),
            "maxmemory": maxmemory,
            "maxmemory_policy": policy,
        },
        "verdict": eviction_verdict(policy, maxmemory),
        "memory_chart": memory_chart(samples, now, maxmemory),
        "samples": len(samples),
        "capacity": job_capacity(sample.client, depths, info, sample.keys),
        "depths": depths,
        "registries": stats.REGISTRIES,
        "counters": stats.counters_of(spaces),
        "namespaces": namespace_rows(state),
        "events": stats.JOB_EVENTS,
        "throughput_chart": throughput_chart(per_minute),
        "finished_last_minute": per_minute[-1][1] if per_minute else 0,
        "finished_per_minute_avg": last_hour / 60,
        "finished_last_hour": last_hour,
        "lock": stats.lock_stats_of([home, *(s for s in spaces if s.keys != home.keys)]),
    }


def namespace_rows(state: ArchiveState) -> list[dict[str, Any]]:
    """One row per namespace on a Redis Cluster (none otherwise): where it lives and what it holds."""
    if not state.settings.cluster_nodes:
        return []
    rows = []
    for queue, spaces in sorted(state.spaces.items()):
        for space in spaces:
            pool = space.client.connection_pool
            depth = stats.queue_depths(space.client, [queue], keys=space.keys)[queue]
            master = getattr(pool, "current", None)
            rows.append(
                {
                    "queue": queue,
                    "namespace": space.keys.rq_prefix,
                    "slot": getattr(pool, "slot", None),
                    "master": f"{master[0]}:{master[1]}" if master else "?",
                    **depth,
                }
            )
    return rows


@bp.get("", strict_slashes=False)
def redis_page() -> Any:
    """The Redis page (HTML; not part of the JSON API)."""
    state = get_state()
    try:
        stats.record_memory_sample(state.redis, state.settings.memory_sample_seconds, keys=state.home_keys)
    except RedisError as exc:
        logger.debug("memory sample skipped: %s", exc)
    data = gather(state)
    return (
        render_template(
            "dashboard/redis.html",
            where=describe(state.redis),
            human_bytes=human_bytes,
            current_instance=0,
            instance_list=[describe(state.redis)],
            rq_url_prefix=url_for("rq_dashboard.queues_overview"),
            rq_dashboard_version=RQ_DASHBOARD_VERSION,
            rq_version=RQ_VERSION,
            active_tab="redis",
            poll_interval=current_app.config.get("RQ_DASHBOARD_POLL_INTERVAL", 2500),
            deprecation_options_usage=False,
            **data,
        ),
        200,
        {"Cache-Control": "no-store"},
    )
