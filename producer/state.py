"""Per-app resources, built once in the factory and stored on ``app.extensions``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy import Engine

from shared.settings import Settings

EXTENSION = "redis_archive"


@dataclass
class ArchiveState:
    """Settings and clients of one producer process."""

    settings: Settings
    redis: Redis
    cache_redis: Redis
    engine: Engine
    queues: dict[str, Queue] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def queue(self, name: str) -> Queue:
        """The RQ queue ``name`` on the queue's Redis, JSON-serialised."""
        queue = self.queues.get(name)
        if queue is None:
            queue = Queue(name, connection=self.redis, serializer=JSONSerializer)
            self.queues[name] = queue
        return queue


def get_state() -> ArchiveState:
    """The state of the current app."""
    state: ArchiveState = current_app.extensions[EXTENSION]
    return state
