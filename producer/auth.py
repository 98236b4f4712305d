"""Optional bearer-token auth: with ``API_TOKEN`` set, every request needs ``Authorization: Bearer``.

One ``before_request`` hook covers every endpoint, including ones added later. Exempt are
views declared ``public`` (``/healthz``, ``/readyz``) and path prefixes registered with
:func:`exempt` (``/dashboard`` brings its own login).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Flask, Response, request

from .error_handlers import error_response
from .flask_app import direct_twin
from .state import EXTENSION, get_state

logger = logging.getLogger(__name__)

EXEMPT_EXTENSION = "redis_archive.auth_exempt"
#: Path prefixes that handle their own authentication.
DEFAULT_EXEMPT_PREFIXES = ("/dashboard",)


def exempt(app: Flask, *prefixes: str) -> None:
    """Leave requests under each of ``prefixes`` (``/x`` covers ``/x`` and ``/x/...``) to their views."""
    app.extensions.setdefault(EXEMPT_EXTENSION, []).extend(p.rstrip("/") for p in prefixes)


def is_exempt(app: Flask, path: str) -> bool:
    """Whether ``path`` needs no token: a public view or a registered prefix."""
    for prefix in app.extensions.get(EXEMPT_EXTENSION, []):
        if path == prefix or path.startswith(prefix + "/"):
            return True
    view = app.view_functions.get(request.endpoint or "")
    return bool(getattr(getattr(view, "__openapi__", None), "public", False))


def token_matches(header: str | None, token: str) -> bool:
    """Whether ``header`` is ``Bearer <token>``; compares in constant time."""
    if not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    try:
        # WSGI headers are latin-1 decoded: this gives back the bytes the client sent.
        given_bytes = given.strip().encode("latin-1")
    except UnicodeEncodeError:
        given_bytes = given.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given_bytes, token.encode("utf-8"))


def register_auth(app: Flask) -> None:
    """Install the token check on ``app`` (it does nothing while ``API_TOKEN`` is unset)."""
    exempt(app, *DEFAULT_EXEMPT_PREFIXES)

    def _token_given(environ: dict[str, Any]) -> bool:
        # A request without the token may still be exempt: Flask's path tells.
        token = app.extensions[EXTENSION].settings.api_token
        return not token or token_matches(environ.get("HTTP_AUTHORIZATION"), token)

    @direct_twin(_token_given)
    @app.before_request
    def _require_token() -> Response | None:
        token = get_state().settings.api_token
        if not token or is_exempt(app, request.path):
            return None
        if token_matches(request.headers.get("Authorization"), token):
            return None
        return error_response(
            401,
            "unauthorized",
            "missing or wrong bearer token (Authorization: Bearer <API_TOKEN>)",
            headers={"WWW-Authenticate": 'Bearer realm="redis-archive"'},
        )
