"""Direct views: a hot JSON POST endpoint answered without Flask's request cycle.

``POST /queue/members`` is the producer's hot path. Flask's cycle around its view (the app and
request contexts, URL matching, the hooks, the response object and its WSGI headers) cost more
CPU than the validation and the Redis write it wraps: ``app.wsgi_app`` in a loop against a
private redis-server, 320-350 us of user CPU per request through Flask, 130-170 us here, the
bare Flask view of ``bench.ceiling_app`` 140-180 us. Served (``redis-archive serve``, wrk, 16
connections, alternating rounds), 3,341 req/s through Flask against 5,444 here, with the bare
Flask view at 6,949.

A :class:`DirectView` takes only a plain request it can answer as Flask would, and only
while the app is as it assumes: every request hook of the endpoint has its twin
(:func:`~producer.flask_app.direct_twin`), which it runs instead; no receiver is connected
to Flask's request signals; the URL map sends the path to the endpoint's view. Anything else
(another method or content type, a query string, a body over the limit, one that is not JSON
or not valid, a missing token, a request whose context a test client keeps) goes to Flask
with the body put back, so every error is Flask's own answer. Once the handler ran, an
exception from it is raised in Flask's path (:data:`PENDING`), so the app's error handlers
answer it and the access log logs it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from flask import request
from flask.signals import (
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    request_finished,
    request_started,
    request_tearing_down,
)
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from .flask_app import ArchiveFlask, direct_twin
from .state import EXTENSION, ArchiveState
from .validation import load_json

#: ``environ`` key of the exception a direct view's handler raised, for Flask's path to raise.
PENDING = "redis_archive.direct_error"

#: The test client's key for keeping the request context after the request (``with client:``).
PRESERVE_CONTEXT = "werkzeug.debug.preserve_context"

#: The signals of Flask's request cycle: while one has a receiver, Flask answers every request.
CYCLE_SIGNALS = (
    appcontext_pushed,
    request_started,
    request_finished,
    request_tearing_down,
    appcontext_tearing_down,
    appcontext_popped,
)

#: ``(state, body, query)`` -> the JSON body of the answer; the models are the view's own.
Handler = Callable[[ArchiveState, Any, Any], bytes]


class DirectView:
    """The plain requests of one ``POST`` endpoint, answered by ``handler`` without Flask."""

    def __init__(self, app: ArchiveFlask, endpoint: str, handler: Handler, status: int) -> None:
        [rule] = app.url_map.iter_rules(endpoint)
        view = app.view_functions[endpoint]
        operation = getattr(view, "__openapi__", None)
        if (
            rule.arguments
            or "POST" not in (rule.methods or ())
            or operation is None
            or operation.body is None
            or operation.query is None
            or operation.max_body is not None
        ):
            raise ValueError(
                f"{endpoint}: a direct view needs a POST rule without variables whose view "
                "validates a body and a query under the app's body limit"
            )
        self.app = app
        self.endpoint = endpoint
        self.path = rule.rule
        self.view = view
        self.body_model = operation.body
        self.query_model = operation.query
        self.handler = handler
        self.code = status
        self.status = f"{status} {HTTP_STATUS_CODES[status].upper()}"
        self.before: list[Callable[[dict[str, Any]], bool]] = []
        self.after: list[Callable[[dict[str, Any], int], None]] = []
        #: Whether the app is as this view assumes (``None``: not known before Flask's first request).
        self.usable: bool | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes] | None:
        """The answer to a plain request, or ``None``: Flask's path answers it."""
        if (
            environ.get("REQUEST_METHOD") != "POST"
            or environ.get("QUERY_STRING")
            or environ.get("CONTENT_TYPE") != "application/json"
            or PRESERVE_CONTEXT in environ
            or not (self.usable if self.usable is not None else self._check())
            or any(signal.receivers for signal in CYCLE_SIGNALS)
        ):
            return None
        length = environ.get("CONTENT_LENGTH", "")
        limit = self.app.config["MAX_CONTENT_LENGTH"]
        if (
            "HTTP_TRANSFER_ENCODING" in environ  # chunked: Werkzeug ignores any length given
            or not (length.isascii() and length.isdigit())
            or (limit is not None and int(length) > limit)
        ):
            return None  # Flask reads the body as Werkzeug does, or refuses it
        for twin in self.before:
            if not twin(environ):
                return None
        raw = environ["wsgi.input"].read(int(length))
        # From here on Flask's path reads the body from memory.
        environ["wsgi.input"] = io.BytesIO(raw)
        if len(raw) < int(length):
            return None  # the client went away: Flask's 400
        try:
            body = self.body_model.model_validate(load_json(raw), strict=True)
            query = self.query_model.model_validate({})
        except (ValueError, RecursionError):  # UnicodeDecodeError and ValidationError among them
            return None  # not JSON or not valid: Flask's 400 or 422
        state: ArchiveState = self.app.extensions[EXTENSION]
        try:
            answer = self.handler(state, body, query)
        except Exception as exc:
            environ[PENDING] = exc  # answered by Flask's path, as if the view raised it
            return None
        for after in self.after:
            after(environ, self.code)
        start_response(
            self.status, [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))]
        )
        return [answer]

    def _check(self) -> bool:
        """Whether the app is as this view assumes, once Flask has served its first request.

        Flask refuses new hooks, rules and views after its first request, so the answer then
        holds for good; before it, Flask answers (the first request of each process).
        """
        app = self.app
        if not app._got_first_request:
            return False
        names: list[str | None] = [None]
        blueprint, _, _ = self.endpoint.rpartition(".")
        while blueprint:
            names.append(blueprint)
            blueprint, _, _ = blueprint.rpartition(".")
        before = [hook for name in names for hook in app.before_request_funcs.get(name, ())]
        # Flask runs the after hooks of the blueprints first, each list in reverse.
        after = [hook for name in reversed(names) for hook in reversed(app.after_request_funcs.get(name, ()))]
        twins = [getattr(hook, "direct_twin", None) for hook in before + after]
        others: list[list[Any]] = [app.teardown_appcontext_funcs]
        for funcs in (app.teardown_request_funcs, app.url_value_preprocessors):
            others += [funcs.get(name, []) for name in names]
        try:
            routed = app.url_map.bind("localhost").match(self.path, "POST")
        except HTTPException:  # a redirect or a refusal: not this view's path
            routed = None
        usable = (
            all(twin is not None for twin in twins)
            and not any(others)
            and app.config["SERVER_NAME"] is None
            and not app.subdomain_matching
            and not app.url_map.host_matching
            and routed == (self.endpoint, {})
            and app.view_functions.get(self.endpoint) is self.view
        )
        if usable:
            self.before = twins[: len(before)]  # type: ignore[assignment]
            self.after = twins[len(before) :]  # type: ignore[assignment]
        self.usable = usable
        return usable


@direct_twin(lambda environ: True)
def _raise_pending() -> None:
    """``before_request`` hook: raise what a direct view's handler raised, for the app's error handlers."""
    error = request.environ.pop(PENDING, None)
    if error is not None:
        raise error


def register_direct(app: ArchiveFlask, endpoint: str, handler: Handler, status: int) -> DirectView:
    """Answer the plain requests of ``endpoint`` (a ``POST`` view) with ``handler``, without Flask."""
    if _raise_pending not in app.before_request_funcs.get(None, []):
        app.before_request(_raise_pending)
    view = DirectView(app, endpoint, handler, status)
    app.direct_views[view.path] = view
    return view
