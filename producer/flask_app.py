"""The producer's Flask class: Flask, less per-request work the API does not use.

Each shortcut was measured on ``POST /queue/members`` (``app.wsgi_app`` called in a loop
against a private redis-server, process CPU time per request; ``bench/http.py`` for the
served figures), and each keeps Flask's behaviour for everything the app does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from types import FunctionType
from typing import Any, TypeVar

from flask import Flask
from flask.sessions import NullSession, SecureCookieSessionInterface

#: ``environ`` key of the moment the WSGI server handed the request to the app (``perf_counter``).
STARTED = "redis_archive.started"

H = TypeVar("H", bound=Callable[..., Any])

#: A view answering some requests of one path without Flask (:class:`producer.direct.DirectView`):
#: ``(environ, start_response)`` -> the answer, or ``None`` for Flask's path to answer it.
DirectAnswer = Callable[[dict[str, Any], Callable[..., Any]], "Iterable[bytes] | None"]


def direct_twin(twin: Callable[..., Any]) -> Callable[[H], H]:
    """Give a request hook its twin for :mod:`producer.direct`: the same work, from ``environ`` alone.

    A ``before_request`` hook's twin takes ``environ`` and returns whether the request may go
    on without Flask (``False``: Flask's path answers it, the hook included); an
    ``after_request`` hook's twin takes ``environ`` and the status code. A direct view serves
    only while every hook of its endpoint has a twin.
    """

    def mark(hook: H) -> H:
        hook.direct_twin = twin  # type: ignore[attr-defined]
        return hook

    return mark


class _NullSessions(SecureCookieSessionInterface):
    """Flask's cookie sessions, without a new :class:`NullSession` per request while no secret key is set.

    No part of the app uses the session (rq-dashboard included) and no ``SECRET_KEY`` is set,
    so Flask builds and discards an empty ``NullSession`` for every request. One shared
    instance does the same: a ``NullSession`` refuses every write, so it stays empty.
    """

    _shared = NullSession()

    def make_null_session(self, app: Flask) -> NullSession:
        return self._shared


class ArchiveFlask(Flask):
    """Flask with a cached :meth:`ensure_sync`, the request's start stamped in ``environ``, direct views."""

    session_interface = _NullSessions()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[FunctionType, Callable[..., Any]] = {}
        #: ``PATH_INFO`` -> the view that answers its plain requests without Flask's request cycle.
        self.direct_views: dict[str, DirectAnswer] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Flask's ``ensure_sync``, remembered per function.

        Flask asks ``inspect.iscoroutinefunction`` about every hook, view and error handler
        on every request: seven calls per ``POST /queue/members``, about 10 us of its CPU.
        The answer for a function does not change, and the app's functions are a fixed set.
        Only plain functions are remembered: a bound method may be made anew for each
        request (a class-based view's), and remembering those would grow without end.
        """
        sync = self._sync.get(func) if type(func) is FunctionType else None  # type: ignore[call-overload]
        if sync is None:
            sync = super().ensure_sync(func)
            if type(func) is FunctionType:
                self._sync[func] = sync  # type: ignore[index]
        return sync

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Stamp the request's start for the access log, then a direct view or Flask's ``wsgi_app``.

        One ``environ`` write instead of a ``before_request`` hook setting ``g``: the
        duration then also covers the request context's set-up.
        """
        environ[STARTED] = time.perf_counter()
        direct = self.direct_views.get(environ.get("PATH_INFO", ""))
        if direct is not None:
            answer = direct(environ, start_response)
            if answer is not None:
                return answer
        return super().wsgi_app(environ, start_response)
