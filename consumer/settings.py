"""RQ settings module: ``rq worker -c consumer.settings -S json member``.

RQ reads ``REDIS_URL`` or ``SENTINEL`` from here; both come from the environment through
:class:`shared.settings.Settings`, so plain ``rq worker`` and ``redis-archive worker`` agree.
With ``REDIS_SENTINELS`` set, RQ connects to the master that the Sentinels name, with the same
passwords and TLS options as the producer (:func:`shared.connections.rq_sentinel_config`).
Either way the client waits out an outage of up to ``WORKER_MASTER_TIMEOUT`` seconds
(:mod:`shared.connections.rideout`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from shared.cluster.clients import CONNECTION_CLASS, is_tag
from shared.connections import (
    close_redis,
    get_redis,
    give_url_options,
    rq_client_options,
    rq_redis_url,
    rq_sentinel_config,
)
from shared.connections.eviction import check_queue_policy
from shared.constants import ALL_QUEUES
from shared.exceptions import ConfigurationError, EvictionPolicyError
from shared.logs import show_logs
from shared.settings import Settings

_settings = Settings.from_env()


# Show this project's log lines (job events, alerts) beside RQ's in the worker's stderr: RQ
# configures only its own ``rq.worker`` logger, and this module is the worker's entry point.
show_logs(("consumer", "shared"), _settings.log_level)


def _refuse_outside_a_namespace(settings: Settings) -> None:
    """On a Redis Cluster, exit (status 78) unless RQ will connect to one namespace's slot.

    RQ builds its client from ``RQ_CONNECTION_CLASS`` and its keys from ``RQ_KEY_PREFIX``, both
    read from the environment before this module is imported (``redis-archive worker`` sets them).
    """
    if not settings.cluster_nodes:
        return
    prefix = os.environ.get("RQ_KEY_PREFIX", "rq")
    connection_class = os.environ.get("RQ_CONNECTION_CLASS", "redis.Redis")
    if is_tag(prefix) and connection_class == CONNECTION_CLASS:
        return
    sys.stderr.write(
        "refusing to start the worker: on a Redis Cluster a worker serves one namespace; start it with "
        f"`redis-archive worker QUEUE`, or set RQ_KEY_PREFIX to a namespace ({{member}}, see "
        f"`redis-archive cluster status`) and RQ_CONNECTION_CLASS={CONNECTION_CLASS} "
        f"(now RQ_KEY_PREFIX={prefix!r}, RQ_CONNECTION_CLASS={connection_class!r})\n"
    )
    raise SystemExit(78)


def _refuse_evicting_policy(settings: Settings) -> None:
    """Exit (status 78) when the queue's Redis may evict queued jobs, unless ALLOW_EVICTING_POLICY=1."""
    conn = get_redis(settings)
    try:
        check_queue_policy(conn, allow=settings.allow_evicting_policy, cluster=bool(settings.cluster_nodes))
    except (EvictionPolicyError, ConfigurationError) as exc:
        sys.stderr.write(f"refusing to start the worker: {exc}\n")
        raise SystemExit(78) from None
    finally:
        close_redis(conn)


# rq imports this module when a worker starts: the checks run before any job is taken.
_refuse_outside_a_namespace(_settings)
_refuse_evicting_policy(_settings)

# Import the job modules once in the worker process: the default rq Worker forks a work horse per
# job, and a fork that inherits them skips importing SQLAlchemy and the jobs again (~0.3 s a job).
import consumer.events  # noqa: E402, F401
import consumer.goods  # noqa: E402, F401
import consumer.jobs  # noqa: E402, F401

QUEUES = list(ALL_QUEUES)

# The client RQ builds from these rides out a failover, a restart or a full Redis for up to
# WORKER_MASTER_TIMEOUT seconds (shared.connections.rideout), so that RQ's own worker classes survive
# them too; FastWorker's fault policy (consumer.worker.faults) handles them itself.
if _settings.sentinels:
    SENTINEL: dict[str, Any] = rq_sentinel_config(_settings)
else:
    REDIS_URL = rq_redis_url(_settings)
    # RQ passes no options with REDIS_URL: register them for that URL.
    give_url_options(REDIS_URL, rq_client_options(_settings))
