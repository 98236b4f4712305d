"""Fixtures: a private server per session (redis-server, or TEST_REDIS_SERVER=valkey), the app, databases."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from producer import create_app
from producer.background import BackgroundThread
from shared.settings import Settings
from shared.stack.binaries import SERVER_ENV
from tests.servers import (
    MYSQL_ADMIN_URL,
    PG_ADMIN_URL,
    REDIS_SERVER,
    RedisProc,
    close_app,
    fresh_database,
    private_redis_proc,
)

# The commands the tests run (`redis-archive up`, `ha up`, `lock demo`) start the server the
# fixtures start (TEST_REDIS_SERVER), not whatever comes first on PATH.
os.environ.setdefault(SERVER_ENV, REDIS_SERVER)

#: The core end-to-end set that `make test` runs a second time on Valkey (`-m core`): the member
#: queue with FastWorker and plain `rq worker`, crash recovery, Sentinel failover, the lock, the
#: cache API, the dashboard. Module (under tests/) -> (node id parts to include, or None for all;
#: parts to leave out).
CORE: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...]]] = {
    "shared/connections/test_identity.py": (None, ()),
    "system/test_e2e.py": (None, ()),
    # FastWorker's scripts against RQ's reference states; the thread and batch modes run on Redis.
    "consumer/test_worker.py": (
        ("[FastWorker-", "test_scripts_flushed"),
        ("FastWorker-threads", "FastWorker-batch"),
    ),
    "consumer/test_jobs.py": (None, ()),
    "shared/stack/test_local.py": (("test_up_runs_everything",), ()),
    "consumer/test_recovery.py": (None, ()),
    "system/test_failover.py": (("durable_run",), ("threaded_run",)),
    "consumer/test_failover.py": (None, ()),
    "shared/stack/test_sentinel.py": (None, ("tls",)),
    "shared/lock/test_redlock.py": (None, ()),
    "producer/test_cache.py": (None, ()),
    "producer/test_cache_input.py": (None, ()),
    "producer/test_dashboard.py": (None, ()),
    "producer/test_dashboard_redis.py": (None, ()),
    "producer/test_dashboard_browser.py": (None, ()),
    "producer/test_probes.py": (None, ()),
}

TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the core set (see :data:`CORE`)."""
    for item in items:
        rule = CORE.get(item.path.relative_to(TESTS).as_posix())
        if rule is None:
            continue
        include, leave_out = rule
        if include is not None and not any(part in item.nodeid for part in include):
            continue
        if any(part in item.nodeid for part in leave_out):
            continue
        item.add_marker(pytest.mark.core)


#: One real server for the session, on a free port.
redis_proc = pytest.fixture(scope="session", name="redis_proc")(private_redis_proc)


@pytest.fixture
def redis_url(redis_proc: RedisProc) -> str:
    return redis_proc.url


@pytest.fixture
def r(redis_proc: RedisProc) -> Iterator[redis.Redis]:
    """A client of the session's redis-server, flushed before the test."""
    client = redis_proc.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'archive.db'}"


@pytest.fixture
def settings(r: redis.Redis, redis_url: str, db_url: str) -> Settings:
    return Settings(redis_url=redis_url, database_url=db_url)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app({"TESTING": True, **asdict(settings)})
    yield app
    close_app(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with fresh_database(PG_ADMIN_URL) as url:
        yield url


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    with fresh_database(MYSQL_ADMIN_URL) as url:
        yield url


class WebhookReceiver:
    """A local HTTP server that records JSON POSTs (stands in for a Slack webhook)."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[dict[str, object]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                receiver.received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alert"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[pytest.MonkeyPatch]:
    """Environment for jobs run in this process (SimpleWorker): the test's Redis and database."""
    from consumer import context

    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)
    context.get_settings.cache_clear()
    yield monkeypatch
    context.get_settings.cache_clear()
    context.dispose_engines()


@pytest.fixture(autouse=True)
def _stop_background_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Stop the producer background threads a test started, when it ends.

    An app built without ``TESTING`` starts its background thread with its first request, as
    under any WSGI server; left running in the test process, it would go on moving scheduled
    jobs and holding RQ's scheduler locks in the session's Redis through the tests after it.
    """
    started: list[BackgroundThread] = []
    original = BackgroundThread.ensure_started

    def ensure_started(self: BackgroundThread) -> object:
        started.append(self)
        return original(self)

    monkeypatch.setattr(BackgroundThread, "ensure_started", ensure_started)
    yield
    for background in started:
        background.stop()
