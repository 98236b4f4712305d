"""ArchiveFlask: Flask's answers, with less work per request."""

from __future__ import annotations

import asyncio

from flask import Flask, session

from producer.flask_app import STARTED, ArchiveFlask


def test_ensure_sync_is_flasks_and_remembered_for_plain_functions() -> None:
    app = ArchiveFlask(__name__)

    def view() -> str:
        return "ok"

    assert app.ensure_sync(view) is view
    assert app.ensure_sync(view) is view and view in app._sync

    class Hooks:
        def hook(self) -> None:
            return None

    hooks = Hooks()
    assert app.ensure_sync(hooks.hook) == hooks.hook
    assert len(app._sync) == 1  # bound methods are asked about each time, never kept


def test_coroutine_functions_still_go_through_flasks_async_check() -> None:
    app, plain = ArchiveFlask(__name__), Flask(__name__)

    async def view() -> str:
        await asyncio.sleep(0)
        return "ok"

    def outcome(flask_app: Flask) -> str:
        try:
            return type(flask_app.ensure_sync(view)).__name__
        except RuntimeError as exc:  # Flask without its async extra
            return f"refused: {exc}"

    assert outcome(app) == outcome(plain)


def test_requests_share_one_null_session_that_refuses_writes() -> None:
    app = ArchiveFlask(__name__)
    seen = []

    @app.get("/")
    def index() -> str:
        seen.append(session._get_current_object())  # type: ignore[attr-defined]
        try:
            session["user"] = "x"
        except RuntimeError:
            return "refused"
        return "written"

    client = app.test_client()
    assert client.get("/").text == "refused" and client.get("/").text == "refused"
    assert seen[0] is seen[1] and len(seen[0]) == 0


def test_the_start_of_each_request_is_stamped_in_environ() -> None:
    app = ArchiveFlask(__name__)
    stamps = []

    @app.get("/")
    def index() -> str:
        from flask import request

        stamps.append(request.environ[STARTED])
        return "ok"

    app.test_client().get("/")
    assert len(stamps) == 1 and isinstance(stamps[0], float)
