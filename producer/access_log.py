"""One log line per request: ip, basic-auth user, method, path, status, duration, user agent."""

from __future__ import annotations

import base64
import logging
import re
import time

from flask import Flask, Response, g, request

logger = logging.getLogger("producer.access")

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters escaped, so a request cannot forge log lines."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def basic_auth_user(header: str | None) -> str:
    """The user name of a basic-auth header, ``-`` for none (or a header that is not valid)."""
    if not header or header[:6].lower() != "basic ":
        return "-"
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return "-"
    return decoded.partition(":")[0] or "-"


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
            user = basic_auth_user(request.headers.get("Authorization"))
            logger.log(
                level,
                '%s %s "%s %s" %s %.1fms "%s"',
                printable(request.headers.get("X-Forwarded-For", request.remote_addr or "-")),
                printable(user).replace(" ", "\\x20"),
                printable(request.method),
                printable(request.full_path.rstrip("?")),
                status,
                duration_ms,
                printable(request.user_agent.string),
            )
        return response
