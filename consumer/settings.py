"""RQ settings module: ``rq worker -c consumer.settings -S json member``.

RQ reads ``REDIS_URL`` or ``SENTINEL`` from here; both come from the environment through
:class:`shared.settings.Settings`, so plain ``rq worker`` and ``redis-archive worker`` agree.
"""

from __future__ import annotations

from typing import Any

from shared.constants import ALL_QUEUES
from shared.settings import Settings

_settings = Settings.from_env()

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
