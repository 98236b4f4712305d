"""Every request is logged once with ip, method, path, status, duration and user agent."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from shared.stack import procs
from shared.stack.local import producer_argv
from shared.stack.procs import free_port, port_open, wait_until
from tests.servers import RedisProc, run_env


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [rec for rec in caplog.records if rec.name == "producer.access"]


def test_each_request_logged_once_with_its_fields(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="producer.access"):
        client.post(
            "/queue/members",
            json={"name": "a", "age": 1},
            headers={"User-Agent": "probe-agent/1.0"},
            environ_base={"REMOTE_ADDR": "10.1.2.3"},
        )
    (record,) = access_records(caplog)
    message = record.getMessage()
    assert record.levelno == logging.INFO
    for part in ("10.1.2.3", "POST /queue/members", " 202 ", "ms", "probe-agent/1.0"):
        assert part in message
    duration = float(message.split(" 202 ")[1].split("ms")[0])
    assert 0 <= duration < 60_000  # from the app's stamp, not the -1.0 of a request without one


def test_4xx_at_warning(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="producer.access"):
        client.get("/jobs/missing?x=1")
    (record,) = access_records(caplog)
    assert record.levelno == logging.WARNING
    assert "GET /jobs/missing?x=1" in record.getMessage() and " 404 " in record.getMessage()


def test_5xx_at_error_and_json_without_traceback(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaput")

    with caplog.at_level(logging.INFO):
        response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "internal_error", "message": "internal server error"}}
    assert "kaput" not in response.get_data(as_text=True)
    (record,) = access_records(caplog)
    assert record.levelno == logging.ERROR


def test_control_characters_cannot_forge_log_lines(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="producer.access"):
        client.get(
            "/api/v1/redis/a%0A127.0.0.1%20%22GET%20/%22%20200%0D%00", headers={"User-Agent": "x\x1by"}
        )
    (record,) = access_records(caplog)
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message and "\x00" not in message and "\x1b" not in message
    assert "a\\x0a127.0.0.1" in message and "\\x0d\\x00" in message and "x\\x1by" in message


def test_basic_auth_user_is_logged(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="producer.access"):
        client.get("/healthz", auth=("ops admin", "secret"))
        client.get("/healthz")
        client.get("/healthz", headers={"Authorization": "Bearer token-value"})
        not_base64 = "Basic " + "n\u00f6t base64".encode().decode("latin-1")
        client.get("/healthz", headers={"Authorization": not_base64})
        client.get("/healthz", headers={"Authorization": "Basic !!!"})
    messages = [record.getMessage() for record in access_records(caplog)]
    assert [message.split(" ")[1] for message in messages] == ["ops\\x20admin", "-", "-", "-", "-"]
    assert all('" 200 ' in message for message in messages)
    assert "secret" not in "".join(messages) and "token-value" not in "".join(messages)


def _gunicorn(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"{host}:{port}", "producer:create_app()"]


@pytest.mark.slow
@pytest.mark.parametrize("server", [producer_argv, _gunicorn], ids=["serve", "gunicorn"])
@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_a_served_producer_writes_its_log_lines_to_stderr(
    redis_proc: RedisProc, tmp_path: Path, server: Callable[..., list[str]], level: str
) -> None:
    """Whichever server runs it, with no logging configured: access and job lines at LOG_LEVEL."""
    port = free_port()
    env = run_env(REDIS_URL=redis_proc.url, DATABASE_URL=f"sqlite:///{tmp_path / 'db'}", LOG_LEVEL=level)
    with open(tmp_path / "server.log", "wb") as log:
        proc = procs.spawn(server("127.0.0.1", port), env=env, stdout=log, stderr=log)
        try:
            assert wait_until(lambda: port_open("127.0.0.1", port), 30), "the server did not start"
            url = f"http://127.0.0.1:{port}/queue/members"
            accepted = requests.post(url, json={"name": "Logged", "age": 3}, timeout=10)
            assert accepted.status_code == 202
            assert requests.post(url, json={"name": "Refused", "age": "x"}, timeout=10).status_code == 422
        finally:
            procs.stop(proc)
    lines = (tmp_path / "server.log").read_text().splitlines()
    job_id = accepted.json()["jobId"]
    refused = [line for line in lines if '"POST /queue/members" 422' in line]
    assert len(refused) == 1 and "WARNING producer.access" in refused[0]
    written = [
        line for line in lines if '"POST /queue/members" 202' in line or f"job waiting id={job_id}" in line
    ]
    assert len(written) == (2 if level == "INFO" else 0), lines
