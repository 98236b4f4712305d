"""What the dashboard tests share: credentials, an app with the dashboard open, member jobs."""

from __future__ import annotations

import base64
from dataclasses import asdict
from typing import Any

import redis
from flask import Flask
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from producer import create_app
from producer.enqueue import job_options
from shared.constants import CREATE_MEMBER_JOB, MEMBER_QUEUE
from shared.settings import Settings

PASSWORD = "s3cret-pw"
TOKEN = "api-token-123"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


AUTH = basic("admin", PASSWORD)


def make_app(settings: Settings, **overrides: Any) -> Flask:
    return create_app({"TESTING": True, **asdict(settings.with_overrides(**overrides))})


def enqueue(r: redis.Redis, settings: Settings, payload: dict[str, Any], **kwargs: Any) -> Job:
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    options = job_options(settings.with_overrides(job_attempts=1), "createMemberJob")
    options.update(kwargs)
    return queue.enqueue(CREATE_MEMBER_JOB, payload, **options)


def work(r: redis.Redis) -> None:
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True)
