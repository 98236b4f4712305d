"""The producer as ``redis-archive serve`` runs it under granian (``producer.server:served_app``).

Granian calls :func:`served_app` once in each of its worker processes: the app, that process's
logging, and its background thread (enqueue latencies, memory samples, RQ's scheduler share)
started at once rather than with the first request. Any other WSGI server serves
``producer:create_app()``, whose processes start the same thread with their first request.
"""

from __future__ import annotations

from flask import Flask

from . import create_app
from .background import start_stats_thread


def served_app() -> Flask:
    """The producer app of one server worker process, with its background thread running."""
    app = create_app()
    start_stats_thread(app)
    return app
