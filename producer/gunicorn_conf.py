"""Gunicorn settings module (``-c python:producer.gunicorn_conf``): per-worker start-up hooks."""

from __future__ import annotations

from typing import Any


def post_worker_init(worker: Any) -> None:
    """Start the stats thread (enqueue latencies, memory samples) in each worker process."""
    from .background import start_stats_thread

    start_stats_thread(worker.wsgi)
