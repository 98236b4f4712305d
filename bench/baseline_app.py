"""The baseline of the HTTP benchmark: a plain Flask view that enqueues with RQ's ``Queue.enqueue``.

Served by gunicorn with two sync workers, as a stock Flask+RQ deployment would be. It checks
the body by hand and enqueues the same member job as the producer (same options).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, jsonify, request
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from producer.enqueue import job_options
from shared.constants import CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, MEMBER_QUEUE
from shared.settings import Settings


def create_app() -> Flask:
    """A Flask app with one enqueue route."""
    app = Flask(__name__)
    settings = Settings.from_env()
    queue = Queue(MEMBER_QUEUE, connection=Redis.from_url(os.environ["REDIS_URL"]), serializer=JSONSerializer)
    options = job_options(settings, CREATE_MEMBER_JOB_NAME)

    @app.post("/queue/members")
    def enqueue_member() -> Any:
        body = request.get_json(silent=True)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("name"), str)
            or not isinstance(body.get("age"), int)
        ):
            return jsonify(error="invalid body"), 422
        job = queue.enqueue(CREATE_MEMBER_JOB, body, **options)
        return jsonify(jobId=job.id), 202

    return app
