"""RQ settings module: ``rq worker -c consumer.settings -S json member``.

RQ reads ``REDIS_URL`` or ``SENTINEL`` from here; both come from the environment through
:class:`shared.settings.Settings`, so plain ``rq worker`` and ``redis-archive worker`` agree.
"""

from __future__ import annotations

import sys
from typing import Any

from shared.connections import get_redis
from shared.constants import ALL_QUEUES
from shared.exceptions import EvictionPolicyError
from shared.memory import check_queue_policy
from shared.settings import Settings

_settings = Settings.from_env()


def _refuse_evicting_policy(settings: Settings) -> None:
    """Exit (status 78) when the queue's Redis may evict queued jobs, unless ALLOW_EVICTING_POLICY=1."""
    conn = get_redis(settings)
    try:
        check_queue_policy(conn, allow=settings.allow_evicting_policy)
    except EvictionPolicyError as exc:
        sys.stderr.write(f"refusing to start the worker: {exc}\n")
        raise SystemExit(78) from None
    finally:
        conn.close()


# rq imports this module when a worker starts: the check runs before any job is taken.
_refuse_evicting_policy(_settings)

QUEUES = list(ALL_QUEUES)

if _settings.sentinels:
    SENTINEL: dict[str, Any] = {
        "INSTANCES": list(_settings.sentinels),
        "MASTER_NAME": _settings.sentinel_master,
        "PASSWORD": _settings.redis_password,
        "SOCKET_TIMEOUT": _settings.socket_timeout,
        "SENTINEL_KWARGS": ({"password": _settings.sentinel_password} if _settings.sentinel_password else {}),
    }
else:
    REDIS_URL = _settings.redis_url
