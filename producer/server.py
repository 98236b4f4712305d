"""The producer as its HTTP server runs it: ``granian --interface wsgi --factory producer.server:served_app``.

Each server worker process calls :func:`served_app` once: the app, plus that process's stats
thread (enqueue latencies, memory samples). Apps built by tests run no thread.
"""

from __future__ import annotations

from flask import Flask

from shared.logs import show_logs

from . import create_app
from .background import start_stats_thread
from .state import get_state


def served_app() -> Flask:
    """The producer app of one server worker process, with its stats thread running."""
    app = create_app()
    with app.app_context():
        show_logs(("producer", "shared"), get_state().settings.log_level)
    start_stats_thread(app)
    return app
