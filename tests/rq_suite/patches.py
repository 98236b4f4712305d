"""What every Python process of an RQ suite run does at start (see ``site/sitecustomize.py``).

The runner puts ``tests/rq_suite/site`` on ``PYTHONPATH`` and passes the run's private
redis-server ports and worker kind in the environment; pytest, its xdist workers, the
forked test processes and whatever the tests start (``rqworker`` subprocesses, multiprocessing
workers) then all:

- send connections meant for RQ's default ``localhost:6379`` to the run's private server
  (one server per xdist worker, picked by ``PYTEST_XDIST_WORKER`` when the connection is made);
- in the FastWorker run, find FastWorker subclasses (:mod:`.workers`) under RQ's worker class
  names before any test module imports them;
- note which worker classes the test constructed and whose work loop ran, in whichever of the
  test's processes (:func:`note_usage`), so the runner can tell how many tests really
  exercised FastWorker.

This module is imported as ``rq_suite.patches``: the name ``tests`` belongs to RQ's suite there.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Comma-separated ports of the run's redis-servers, one per xdist worker.
PORTS_ENV = "RQ_SUITE_REDIS_PORTS"
#: Which worker classes the tests get: :data:`CONTROL` (RQ's own) or :data:`FAST`.
WORKER_ENV = "RQ_SUITE_WORKER"
CONTROL = "rq"
FAST = "fast"

#: Where RQ's tests connect when they name no server (``Redis()``, ``redis://127.0.0.1:6379``).
RQ_DEFAULT_PORT = 6379
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", ""})


#: The file where every process of the current test notes its workers (the plugin sets it per test).
USAGE_FILE_ENV = "RQ_SUITE_USAGE_FILE"


def note_usage(kind: str, name: str, fast: bool) -> None:
    """Append "<kind> <class name> <0|1>" to the current test's usage file, if there is one.

    Every process of the test writes there: the test process, its multiprocessing workers and
    the ``rqworker`` subprocesses it starts (they inherit the environment).
    """
    path = os.environ.get(USAGE_FILE_ENV)
    if not path:
        return
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, f"{kind} {name} {int(fast)}\n".encode())
    finally:
        os.close(descriptor)


def read_usage(path: str) -> dict[str, list[str]]:
    """A usage file as lists: classes ``constructed``, whose loop ``worked``, and the ``fast`` ones."""
    usage: dict[str, set[str]] = {"constructed": set(), "worked": set(), "fast": set()}
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        kind, name, fast = line.split()
        usage[kind].add(name)
        if fast == "1":
            usage["fast"].add(name)
    return {kind: sorted(names) for kind, names in usage.items()}


#: Set once :func:`redirect_redis` is in place; the plugin refuses to run tests without it.
REDIRECTED = False
#: The worker kind this process swapped in (``None`` until :func:`install_from_env`).
WORKER_KIND: str | None = None


def private_port() -> int:
    """The port of this process's private redis-server (by xdist worker: ``gw3`` takes the 4th)."""
    ports = [int(port) for port in os.environ[PORTS_ENV].split(",")]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    return ports[index % len(ports)]


def _is_default_server(host: Any, port: Any) -> bool:
    try:
        return (host is None or str(host) in _LOCAL_HOSTS) and int(port) == RQ_DEFAULT_PORT
    except (TypeError, ValueError):
        return False


def redirect_redis() -> None:
    """Make every TCP connection to ``localhost:6379`` go to :func:`private_port` instead.

    Pools get the private port in their ``connection_kwargs`` (so RQ's
    ``get_connection_kwargs`` hands it on to subprocesses); each connection checks again, for
    connections built without a pool.
    """
    global REDIRECTED
    from redis.connection import Connection, ConnectionPool

    pool_init = ConnectionPool.__init__
    connection_init = Connection.__init__

    @functools.wraps(pool_init)
    def redirected_pool_init(self: ConnectionPool, *args: Any, **kwargs: Any) -> None:
        connection_class = args[0] if args else kwargs.get("connection_class", Connection)
        if isinstance(connection_class, type) and issubclass(connection_class, Connection):
            if _is_default_server(kwargs.get("host", "localhost"), kwargs.get("port", RQ_DEFAULT_PORT)):
                kwargs["port"] = private_port()
        pool_init(self, *args, **kwargs)

    @functools.wraps(connection_init)
    def redirected_connection_init(self: Connection, *args: Any, **kwargs: Any) -> None:
        connection_init(self, *args, **kwargs)  # type: ignore[no-untyped-call]
        if _is_default_server(self.host, self.port):
            self.port = private_port()

    ConnectionPool.__init__ = redirected_pool_init  # type: ignore[method-assign]
    Connection.__init__ = redirected_connection_init  # type: ignore[method-assign]
    _refuse_default_server()
    REDIRECTED = True


def _refuse_default_server() -> None:
    """Last guard: a socket of this process never connects to a loopback port 6379.

    Whatever a redirect above missed fails loudly (in both runs alike) instead of reaching the
    Redis that may be running there.
    """
    connect = socket.socket.connect

    @functools.wraps(connect)
    def guarded_connect(self: socket.socket, address: Any) -> None:
        if (
            isinstance(address, tuple)
            and len(address) >= 2
            and address[1] == RQ_DEFAULT_PORT
            and (str(address[0]) in _LOCAL_HOSTS or str(address[0]).startswith("127."))
        ):
            raise ConnectionRefusedError(
                f"rq-suite: {address[0]}:{address[1]} is off limits (not redirected)"
            )
        connect(self, address)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign,assignment]


def _recording(method: Callable[..., Any], kind: str) -> Callable[..., Any]:
    """``method`` wrapped to note ``type(self)`` under ``kind`` (:func:`note_usage`)."""

    @functools.wraps(method)
    def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        note_usage(kind, type(self).__name__, bool(getattr(type(self), "rq_suite_fast", False)))
        return method(self, *args, **kwargs)

    return recorded


def record_usage() -> None:
    """Note every worker constructed and every work loop run (RQ's and FastWorker's)."""
    from rq.worker import BaseWorker

    BaseWorker.__init__ = _recording(BaseWorker.__init__, "constructed")  # type: ignore[method-assign]
    BaseWorker.work = _recording(BaseWorker.work, "worked")  # type: ignore[method-assign]
    if WORKER_KIND == FAST:
        # FastWorker's loop replaces BaseWorker.work rather than calling it.
        from consumer.worker import FastWorker

        FastWorker.work = _recording(FastWorker.work, "worked")  # type: ignore[method-assign]


def swap_workers() -> None:
    """Put :mod:`.workers`' FastWorker subclasses under RQ's worker class names.

    Every place a test can take a worker class from: ``rq``, ``rq.worker`` and the module that
    defines them, before the test modules run ``from rq import Worker``. Strings resolved at
    run time (``rq worker -w rq.worker.SimpleWorker``, RQ's default ``rq.Worker``) find them too.
    """
    import rq
    import rq.worker
    import rq.worker.worker_classes

    from . import workers

    for name, cls in workers.SWAPS.items():
        for module in (rq, rq.worker, rq.worker.worker_classes):
            if hasattr(module, name):
                setattr(module, name, cls)


def install_from_env() -> None:
    """Apply this module's patches when the environment names a suite run; else do nothing."""
    global WORKER_KIND
    if not os.environ.get(PORTS_ENV):
        return
    redirect_redis()
    kind = os.environ.get(WORKER_ENV, CONTROL)
    if kind not in (CONTROL, FAST):
        raise RuntimeError(f"{WORKER_ENV} must be {CONTROL!r} or {FAST!r}, not {kind!r}")
    WORKER_KIND = kind
    if kind == FAST:
        swap_workers()
    record_usage()
