"""RQ settings module: ``rq worker -c consumer.settings -S json member``.

RQ reads ``REDIS_URL`` or ``SENTINEL`` from here; both come from the environment through
:class:`shared.settings.Settings`, so plain ``rq worker`` and ``redis-archive worker`` agree.
With ``REDIS_SENTINELS`` set, RQ connects to the master that the Sentinels name, with the same
passwords and TLS options as the producer (:func:`shared.connections.rq_sentinel_config`).
"""

from __future__ import annotations

from typing import Any

from shared.connections import rq_redis_url, rq_sentinel_config
from shared.constants import ALL_QUEUES
from shared.settings import Settings

_settings = Settings.from_env()

QUEUES = list(ALL_QUEUES)

if _settings.sentinels:
    SENTINEL: dict[str, Any] = rq_sentinel_config(_settings)
else:
    REDIS_URL = rq_redis_url(_settings)
