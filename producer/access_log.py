"""One log line per request: ip, basic-auth user, method, path, status, duration, user agent."""

from __future__ import annotations

import base64
import logging
import re
import time
from typing import Any

from flask import Flask, Response, request

from .flask_app import STARTED, direct_twin

logger = logging.getLogger("producer.access")

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters escaped, so a request cannot forge log lines."""
    # Control characters are never printable: most fields skip the regex (5 per line).
    if text.isprintable():
        return text
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


def log_request(
    environ: dict[str, Any], remote_addr: str | None, method: str, full_path: str, status: int
) -> None:
    """Log one answered request; 4xx at WARNING, 5xx at ERROR.

    The duration runs from :class:`~producer.flask_app.ArchiveFlask`'s stamp in ``environ``
    (``-1.0`` under another Flask class). The headers come straight from ``environ``, as
    ``request.headers`` would give them, without building the headers view and a UserAgent
    per logged request.
    """
    level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
    if not logger.isEnabledFor(level):
        return
    started = environ.get(STARTED)
    duration_ms = (time.perf_counter() - started) * 1000 if started is not None else -1.0
    user = basic_auth_user(environ.get("HTTP_AUTHORIZATION"))
    logger.log(
        level,
        '%s %s "%s %s" %s %.1fms "%s"',
        printable(environ.get("HTTP_X_FORWARDED_FOR", remote_addr or "-")),
        printable(user).replace(" ", "\\x20"),
        printable(method),
        printable(full_path.rstrip("?")),
        status,
        duration_ms,
        printable(environ.get("HTTP_USER_AGENT", "")),
    )


def register_access_log(app: Flask) -> None:
    """Log every request of ``app`` once (:func:`log_request`)."""

    def _log_directly(environ: dict[str, Any], status: int) -> None:
        # A direct view takes only requests without a query string: the path is the full path.
        log_request(
            environ, environ.get("REMOTE_ADDR"), environ["REQUEST_METHOD"], environ["PATH_INFO"], status
        )

    @direct_twin(_log_directly)
    @app.after_request
    def _log_request(response: Response) -> Response:
        log_request(
            request.environ, request.remote_addr, request.method, request.full_path, response.status_code
        )
        return response
