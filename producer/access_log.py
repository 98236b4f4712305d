"""One log line per request: ip, method, path, user agent, status, duration."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

logger = logging.getLogger("producer.access")


def register_access_log(app: Flask) -> None:
    """Log every request of ``app`` once; 4xx at WARNING, 5xx at ERROR."""

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _log_request(response: Response) -> Response:
        started = g.get("request_started")
        duration_ms = (time.perf_counter() - started) * 1000 if started is not None else -1.0
        status = response.status_code
        level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(
                level,
                '%s "%s %s" %s %.1fms "%s"',
                request.headers.get("X-Forwarded-For", request.remote_addr),
                request.method,
                request.full_path.rstrip("?"),
                status,
                duration_ms,
                request.user_agent.string,
            )
        return response
