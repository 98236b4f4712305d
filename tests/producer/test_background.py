"""The producer's background thread: RQ's scheduler share, started once in each serving process."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
import redis
from flask import Flask
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now

from producer import create_app
from producer.background import FLUSH_SECONDS, background_of, start_stats_thread
from shared.settings import Settings
from shared.stack import procs
from shared.stack.procs import wait_until
from tests.servers import ROOT, close_app

LOCK = "rq:scheduler-lock:member"


def _scheduler_pids(r: redis.Redis) -> set[int]:
    """The processes whose producer share of RQ's scheduler is registered."""
    return {int(r.hget(key, "pid") or 0) for key in r.scan_iter("rq:scheduler:producer-*")}


def _background_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "archive-stats"}


@pytest.fixture
def served(settings: Settings) -> Iterator[Flask]:
    """An app that starts its background thread with its first request, as a server's does."""
    app = create_app({"TESTING": True, "BACKGROUND_THREAD": True, **asdict(settings)})
    yield app
    background_of(app).stop()
    close_app(app)


def test_the_background_thread_moves_due_retries_back_to_their_queue(app: Flask, r: redis.Redis) -> None:
    queue = Queue("member", connection=r, serializer=JSONSerializer)
    job = queue.enqueue_at(now() - timedelta(seconds=1), "tests.parity_jobs.add", 1, 2)
    assert job.get_status() == JobStatus.SCHEDULED
    stop = start_stats_thread(app)
    try:
        assert wait_until(lambda: queue.job_ids == [job.id], 10)
        holder = r.get(LOCK)
        assert holder is not None and holder.startswith(b"producer-")
    finally:
        stop.set()
    # Stopping releases the lock at once (the thread's last round), for the next mover.
    assert wait_until(lambda: r.get(LOCK) is None, 10)


def test_apps_built_for_tests_start_no_thread_on_requests(app: Flask) -> None:
    assert app.test_client().get("/healthz").status_code == 200
    background = background_of(app)
    assert background.thread is None and not background.running()


def test_the_first_request_starts_one_thread_however_many_arrive_at_once(
    served: Flask, r: redis.Redis
) -> None:
    background = background_of(served)
    assert not background.running()  # building the app started nothing
    queue = Queue("member", connection=r, serializer=JSONSerializer)
    job = queue.enqueue_at(now() - timedelta(seconds=1), "tests.parity_jobs.add", 1, 2)
    before = _background_threads()
    gate = threading.Barrier(8)
    statuses: list[int] = []

    def first_request() -> None:
        client = served.test_client()
        gate.wait(10)
        statuses.append(client.get("/healthz").status_code)

    callers = [threading.Thread(target=first_request) for _ in range(8)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(10)
    assert statuses == [200] * 8
    started = _background_threads() - before
    assert started == {background.thread} and background.running()
    assert background.pid == os.getpid()
    # The thread is the process's scheduler share: it moves the due job and registers this pid.
    assert wait_until(lambda: queue.job_ids == [job.id], 10)
    assert _scheduler_pids(r) == {os.getpid()}
    # Later requests start nothing more.
    for _ in range(5):
        served.test_client().get("/healthz")
    assert _background_threads() - before == {background.thread}

    # A stop ends the thread within its bounded wait, hands the lock over, and stays stopped.
    assert background.stop()
    assert r.get(LOCK) is None
    served.test_client().get("/healthz")
    assert not background.running()


def test_a_refused_request_starts_the_thread_too(settings: Settings) -> None:
    app = create_app({"TESTING": True, "BACKGROUND_THREAD": True, **asdict(settings), "api_token": "secret"})
    try:
        assert app.test_client().post("/queue/members", json={}).status_code == 401
        assert background_of(app).running()
    finally:
        background_of(app).stop()
        close_app(app)


def _in_child(app: Flask, redis_url: str, parent_thread: threading.Thread | None) -> dict[str, object]:
    """In a forked child: the parent's thread did not come along; the first request starts one here."""
    background = background_of(app)
    seen: dict[str, object] = {"inherited_running": background.running()}
    seen["status"] = app.test_client().get("/healthz").status_code
    seen["running"] = background.running()
    seen["pid_is_mine"] = background.pid == os.getpid()
    seen["new_thread"] = background.thread is not None and background.thread is not parent_thread
    r = redis.Redis.from_url(redis_url)
    try:
        seen["registered"] = wait_until(lambda: os.getpid() in _scheduler_pids(r), 10)
    finally:
        r.close()
    seen["stopped"] = background.stop()
    return seen


def test_a_forked_child_starts_its_own_thread_with_its_first_request(
    served: Flask, r: redis.Redis, redis_url: str
) -> None:
    background = background_of(served)
    assert served.test_client().get("/healthz").status_code == 200
    parent_thread = background.thread
    assert background.running() and parent_thread is not None
    assert wait_until(lambda: os.getpid() in _scheduler_pids(r), 10)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Forking with threads running is the case under test (a serving process that forks).
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # the child never returns to pytest
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(_in_child(served, redis_url, parent_thread)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    ended: list[int] = []

    def reaped() -> bool:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid == child:
            ended.append(os.waitstatus_to_exitcode(status))
        return bool(ended)

    if not wait_until(reaped, 30):
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as pipe:
        seen = json.loads(pipe.read() or b"{}")
    assert ended == [0], "the child hung or failed"
    assert seen == {
        "inherited_running": False,
        "status": 200,
        "running": True,
        "pid_is_mine": True,
        "new_thread": True,
        "registered": True,
        "stopped": True,
    }
    # The parent's thread went on untouched.
    assert background.running() and background.thread is parent_thread and background.pid == os.getpid()


def _env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        DATABASE_URL=f"sqlite:///{tmp_path / 'archive.db'}",
        PYTHONPATH=str(ROOT),
        MEMORY_SAMPLE_SECONDS="0",
    )
    for var in ("REDIS_SENTINELS", "REDIS_CLUSTER_NODES", "API_TOKEN", "FLASK_DEBUG"):
        env.pop(var, None)
    return env


EXITING = """
import sys, redis
from producer import create_app
from shared.stack.procs import wait_until
app = create_app()
app.test_client().get("/healthz")
r = redis.Redis.from_url(sys.argv[1])
assert wait_until(lambda: (r.get("rq:scheduler-lock:member") or b"").startswith(b"producer-"), 10)
print("held", flush=True)
"""


def test_a_process_exits_promptly_and_hands_the_scheduler_lock_over(
    r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", EXITING, redis_url],
        env=_env(redis_url, tmp_path),
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and out == b"held\n", err.decode(errors="replace")[-2000:]
    # Its thread's last round, run at exit, released the lock (held it would be for 61 s).
    assert r.get(LOCK) is None
    assert not list(r.scan_iter("rq:scheduler:producer-*"))


def _ended(process: psutil.Process) -> bool:
    """Whether ``process`` has exited (a zombie nobody reaped yet has)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


#: Servers that build the app in a process that serves nothing and serve it from another, and
#: the signal that stops them as their users do.
SERVERS = {
    # The reloader's watcher builds the app too; a child process serves it.
    "flask-run": (["-m", "flask", "--app", "producer", "run", "--port", "{port}", "--reload"], signal.SIGINT),
    # The master builds the app (--preload), then forks the workers that serve it.
    "gunicorn-preload": (
        ["-m", "gunicorn", "--preload", "-w", "2", "-b", "127.0.0.1:{port}", "producer:create_app()"],
        signal.SIGTERM,
    ),
}


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_only_the_serving_processes_start_the_thread_and_stop_it_cleanly(
    server: str, r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    port = procs.free_port()
    argv, stop_signal = SERVERS[server]
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = procs.spawn(
            [sys.executable, *(arg.format(port=port) for arg in argv)],
            env=_env(redis_url, tmp_path),
            stdout=out,
            stderr=out,
            cwd=str(ROOT),
        )
    children: list[psutil.Process] = []
    try:
        assert wait_until(lambda: procs.port_open("127.0.0.1", port), 60), log.read_text()[-2000:]
        # A thread started with the app (or before the fork) would have registered its share by now.
        time.sleep(2 * FLUSH_SECONDS)
        assert not _scheduler_pids(r), "a thread started before any request"
        for _ in range(6):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 200
            conn.close()
        assert wait_until(lambda: r.exists(LOCK) == 1, 10), log.read_text()[-2000:]
        children = psutil.Process(proc.pid).children(recursive=True)
        movers = _scheduler_pids(r)
        serving = {child.pid for child in children}
        assert movers and movers <= serving and proc.pid not in movers, (movers, serving, proc.pid)
    finally:
        code = procs.stop(proc, timeout=20, sig=stop_signal)
        # The serving processes may outlive the one the signal went to (flask's reloader does not
        # wait for its child): the thread's last round runs as they exit.
        ended = wait_until(lambda: all(_ended(child) for child in children), 20)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    assert ended, "a serving process did not exit"
    assert code in (0, -stop_signal), (code, log.read_text()[-2000:])
    # Each serving process stopped its thread on the way out: the lock is free at once, not in 61 s.
    assert r.get(LOCK) is None, log.read_text()[-2000:]
