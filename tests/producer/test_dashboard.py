"""The dashboard: access control, rq-dashboard on RQ 3 with JSON jobs, actions, read-only, the Redis page."""

from __future__ import annotations

import base64
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from producer import create_app
from producer.enqueue import job_options
from producer.redis_page import eviction_verdict, human_bytes
from shared import stats
from shared.connections.identity import server_identity
from shared.constants import (
    CREATE_MEMBER_JOB,
    MEMBER_QUEUE,
)
from shared.db import init_db, make_engine
from shared.rqmodel.keys import KEYS
from shared.settings import Settings
from shared.stack.local import Stack, procs, producer_argv, worker_argv
from shared.stack.procs import free_port
from tests.servers import close_app, private_redis_proc, run_env, start_redis

PASSWORD = "s3cret-pw"
TOKEN = "api-token-123"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


AUTH = basic("admin", PASSWORD)


# This module's own redis-server: the commands it runs (each allocates a latency histogram in
# Redis 7) and the settings it changes stay out of the session's server.
redis_proc = pytest.fixture(scope="module", name="redis_proc")(private_redis_proc)


def make_app(settings: Settings, **overrides: Any) -> Flask:
    return create_app({"TESTING": True, "SETTINGS": settings.with_overrides(**overrides)})


@pytest.fixture
def dash(settings: Settings) -> Iterator[FlaskClient]:
    app = make_app(settings, dashboard_password=PASSWORD, job_attempts=1)
    yield app.test_client()
    close_app(app)


def enqueue(r: redis.Redis, settings: Settings, payload: dict[str, Any], **kwargs: Any) -> Job:
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    options = job_options(settings.with_overrides(job_attempts=1), "createMemberJob")
    options.update(kwargs)
    return queue.enqueue(CREATE_MEMBER_JOB, payload, **options)


def work(r: redis.Redis) -> None:
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    SimpleWorker([queue], connection=r, serializer=JSONSerializer).work(burst=True)


# --- access -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/0/data/queues.json", "/dashboard/redis"])
def test_closed_without_password_or_token(settings: Settings, path: str) -> None:
    app = make_app(settings, dashboard_password=None, api_token=None)
    try:
        response = app.test_client().get(path, headers=AUTH)
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "dashboard_closed"
        assert "DASHBOARD_PASSWORD" in response.get_json()["error"]["message"]
    finally:
        close_app(app)


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/redis", "/dashboard/static/css/main.css"])
def test_401_without_credentials(dash: FlaskClient, path: str) -> None:
    response = dash.get(path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert response.get_json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "headers",
    [
        basic("admin", "wrong"),
        basic("someone", PASSWORD),
        basic("admin", ""),
        {"Authorization": "Bearer " + PASSWORD},
        {"Authorization": "Digest username=admin"},
    ],
)
def test_wrong_credentials_are_401(dash: FlaskClient, headers: dict[str, str]) -> None:
    assert dash.get("/dashboard/", headers=headers).status_code == 401


def test_password_opens_it(dash: FlaskClient) -> None:
    response = dash.get("/dashboard/", headers=AUTH)
    assert response.status_code == 200
    assert b"Redis Archive" in response.data
    assert b'href="/dashboard/redis"' in response.data


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {TOKEN}"}, basic("anyone", TOKEN)], ids=["bearer", "basic"]
)
def test_api_token_opens_it(settings: Settings, headers: dict[str, str]) -> None:
    app = make_app(settings, dashboard_password=None, api_token=TOKEN)
    try:
        client = app.test_client()
        assert client.get("/dashboard/0/data/queues.json", headers=headers).status_code == 200
        assert client.get("/dashboard/redis", headers=headers).status_code == 200
        assert client.get("/dashboard/", headers=basic("admin", "nope")).status_code == 401
    finally:
        close_app(app)


def test_dashboard_is_not_in_the_openapi_document(dash: FlaskClient) -> None:
    paths = dash.get("/openapi.json").get_json()["paths"]
    assert not [path for path in paths if path.startswith("/dashboard")]


# --- rq-dashboard on RQ 3 with JSON jobs --------------------------------------------------------


def test_queue_counts_per_registry(
    dash: FlaskClient, r: redis.Redis, settings: Settings, worker_env: Any
) -> None:
    for i in range(2):
        enqueue(r, settings, {"name": f"done{i}", "age": 1})
    enqueue(r, settings, {"bad": True})
    work(r)
    for i in range(3):
        enqueue(r, settings, {"name": f"waiting{i}", "age": 1})
    queues = dash.get("/dashboard/0/data/queues.json", headers=AUTH).get_json()["queues"]
    member = next(q for q in queues if q["name"] == MEMBER_QUEUE)
    assert member["count"] == 3
    assert member["finished_job_registry_count"] == 2
    assert member["failed_job_registry_count"] == 1
    listed = dash.get("/dashboard/0/data/jobs/member/queued/8/asc/1.json", headers=AUTH).get_json()
    assert len(listed["jobs"]) == 3


def test_job_with_a_dependency_is_shown(dash: FlaskClient, r: redis.Redis, settings: Settings) -> None:
    # rq-dashboard 0.9 decodes dependency ids as bytes; RQ 3 returns str (a 500 before the fix).
    first = enqueue(r, settings, {"name": "a", "age": 1})
    second = enqueue(r, settings, {"name": "b", "age": 1}, depends_on=first)
    response = dash.get(f"/dashboard/0/data/job/{second.id}.json", headers=AUTH)
    assert response.status_code == 200
    data = response.get_json()
    assert data["depends_on"] == [first.id]
    assert data["depends_on_status"] == ["active"]
    assert data["status"] == "deferred"
    assert '"maxAttempts": 1' in data["metadata"]


@pytest.mark.parametrize("path", ["/dashboard/0/view/job/nope", "/dashboard/0/data/job/nope.json"])
def test_unknown_job_is_404(dash: FlaskClient, path: str) -> None:
    response = dash.get(path, headers=AUTH)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_only_instance_zero(dash: FlaskClient) -> None:
    assert dash.get("/dashboard/1/data/queues.json", headers=AUTH).status_code == 404


def test_workers_page_reads_a_busy_workers_json_job(
    dash: FlaskClient, r: redis.Redis, settings: Settings
) -> None:
    job = enqueue(r, settings, {"name": "busy", "age": 1})
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    worker = SimpleWorker([queue], connection=r, serializer=JSONSerializer)
    worker.register_birth()
    try:
        worker.prepare_execution(job)
        workers = dash.get("/dashboard/0/data/workers.json", headers=AUTH).get_json()["workers"]
        assert [w["current_job"]["job_id"] for w in workers] == [job.id]
    finally:
        worker.register_death()


def test_requeue_delete_and_empty(
    dash: FlaskClient, r: redis.Redis, settings: Settings, worker_env: Any
) -> None:
    failed = enqueue(r, settings, {"bad": True})
    work(r)
    queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
    assert queue.failed_job_registry.get_job_ids() == [failed.id]

    response = dash.post(f"/dashboard/job/{failed.id}/requeue", headers=AUTH)
    assert response.get_json() == {"status": "OK"}
    assert queue.get_job_ids() == [failed.id]
    assert Job.fetch(failed.id, connection=r, serializer=JSONSerializer).get_status() == JobStatus.QUEUED

    work(r)  # fails again
    response = dash.post("/dashboard/requeue/member", headers=AUTH)
    assert response.get_json() == {"status": "OK", "count": 1}
    assert queue.get_job_ids() == [failed.id]

    response = dash.post(f"/dashboard/job/{failed.id}/delete", headers=AUTH)
    assert response.get_json() == {"status": "OK"}
    assert not r.exists(Job.key_for(failed.id))
    assert queue.count == 0

    for i in range(4):
        enqueue(r, settings, {"name": f"n{i}", "age": 1})
    assert dash.post("/dashboard/queue/member/queued/empty", headers=AUTH).get_json()["count"] == 4
    assert queue.count == 0

    enqueue(r, settings, {"bad": True})
    work(r)
    assert dash.post("/dashboard/queue/member/failed/empty", headers=AUTH).get_json()["count"] == 1
    assert queue.failed_job_registry.count == 0


def test_requeue_gives_a_failed_job_its_attempts_back(
    dash: FlaskClient, r: redis.Redis, settings: Settings, worker_env: Any
) -> None:
    failed = enqueue(
        r, settings, {"bad": True}, **job_options(settings.with_overrides(retry_intervals=(0,)), "x")
    )
    work(r)
    failed.refresh()
    assert failed.get_status() == JobStatus.FAILED and failed.retries_left == 0
    assert dash.post(f"/dashboard/job/{failed.id}/requeue", headers=AUTH).get_json() == {"status": "OK"}
    failed.refresh()
    assert failed.get_status() == JobStatus.QUEUED
    assert failed.retries_left == settings.job_attempts - 1


def test_mutations_need_post_from_the_same_origin(
    dash: FlaskClient, r: redis.Redis, settings: Settings, worker_env: Any
) -> None:
    failed = enqueue(r, settings, {"bad": True})
    work(r)
    response = dash.get("/dashboard/requeue/member", headers=AUTH)
    assert response.status_code == 405
    response = dash.post(
        f"/dashboard/job/{failed.id}/delete", headers={**AUTH, "Origin": "http://evil.example"}
    )
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "cross_origin"
    assert r.exists(Job.key_for(failed.id))
    same = dash.post(f"/dashboard/job/{failed.id}/delete", headers={**AUTH, "Origin": "http://localhost"})
    assert same.get_json() == {"status": "OK"}


def test_read_only_hides_and_refuses_actions(settings: Settings, r: redis.Redis, worker_env: Any) -> None:
    app = make_app(settings, dashboard_password=PASSWORD, dashboard_read_only=True)
    try:
        client = app.test_client()
        failed = enqueue(r, settings, {"bad": True})
        work(r)
        waiting = enqueue(r, settings, {"name": "w", "age": 1})
        for path in (
            f"/dashboard/job/{failed.id}/requeue",
            f"/dashboard/job/{failed.id}/delete",
            "/dashboard/requeue/member",
            "/dashboard/queue/member/queued/empty",
            "/dashboard/queue/member/failed/empty",
            "/dashboard/queue/member/compact",
        ):
            response = client.post(path, headers=AUTH)
            assert response.status_code == 403, path
            assert response.get_json()["error"]["code"] == "read_only"
        queue = Queue(MEMBER_QUEUE, connection=r, serializer=JSONSerializer)
        assert queue.get_job_ids() == [waiting.id]
        assert queue.failed_job_registry.get_job_ids() == [failed.id]
        page = client.get("/dashboard/0/view/jobs/member/failed/8/asc/1", headers=AUTH).data.decode()
        assert 'id="read-only-badge"' in page
        assert "#requeue-all-btn" in page and "display: none !important" in page
        assert 'id="empty-btn"' not in page  # rq-dashboard's own switch drops delete and empty
    finally:
        close_app(app)


# --- the Redis page -------------------------------------------------------------------------


def cell(page: str, field: str) -> str:
    match = re.search(rf'data-field="{field}"[^>]*>([^<]*)<', page)
    assert match, f"no {field} in the page"
    return match.group(1).strip()


def test_redis_page_figures(dash: FlaskClient, r: redis.Redis, settings: Settings, worker_env: Any) -> None:
    for i in range(3):
        enqueue(r, settings, {"name": f"done{i}", "age": 1})
    work(r)
    for i in range(5):
        enqueue(r, settings, {"name": f"waiting{i}", "age": 1})
    r.hset(KEYS.lock_stats, mapping={"acquired": 7, "contended": 3, "failed": 2, "released": 6, "lost": 1})
    old_max = r.config_get("maxmemory")["maxmemory"]
    r.config_set("maxmemory", str(64 * 1024 * 1024))
    try:
        page = dash.get("/dashboard/redis", headers=AUTH).data.decode()
    finally:
        r.config_set("maxmemory", old_max)
    info = r.info("memory")
    # Redis or Valkey (TEST_REDIS_SERVER), named with its own version.
    identity = server_identity(r)
    assert re.search(rf'data-field="server">{identity.title}<', page), identity
    assert ("Redis-compatible 7.2" in page) == identity.is_valkey
    assert re.fullmatch(r"[\d.]+ (B|KiB|MiB|GiB)", cell(page, "used_memory"))
    assert cell(page, "used_memory_rss")
    assert cell(page, "used_memory_peak")
    assert float(cell(page, "mem_fragmentation_ratio")) > 0
    assert cell(page, "maxmemory").startswith("64.00 MiB")
    assert cell(page, "maxmemory_policy") == info["maxmemory_policy"] == "noeviction"
    assert "safe: noeviction" in page
    row = re.search(r'<tr data-queue="member">(.*?)</tr>', page, re.S)
    assert row is not None
    assert re.search(r'data-registry="queued">5<', row.group(1))
    assert re.search(r'data-registry="finished">3<', row.group(1))
    assert cell(page, "finished_last_minute") == "3" or cell(page, "finished_last_hour") == "3"
    assert cell(page, "finished_last_hour") == "3"
    assert cell(page, "acquired") == "7" and cell(page, "contended") == "3" and cell(page, "failed") == "2"
    assert cell(page, "extended") == "0" and cell(page, "lost") == "1"
    jobs_that_fit = int(cell(page, "jobs_that_fit").replace(",", ""))
    per_job = float(cell(page, "bytes_per_job"))
    assert 100 < per_job < 10_000
    assert jobs_that_fit == pytest.approx((64 * 1024 * 1024 - info["used_memory"]) / per_job, rel=0.05)
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in page
    assert 'id="memory-line"' in page  # the page's own sample is drawn
    # Nothing is loaded from another host (the footer's plain links are not loaded).
    assert not re.search(r'src="(https?:)?//', page)
    assert not re.search(r'<link[^>]+href="(https?:)?//', page)


def test_redis_page_warns_about_an_evicting_policy(dash: FlaskClient, r: redis.Redis) -> None:
    r.config_set("maxmemory-policy", "allkeys-lru")
    try:
        page = dash.get("/dashboard/redis", headers=AUTH).data.decode()
    finally:
        r.config_set("maxmemory-policy", "noeviction")
    assert cell(page, "maxmemory_policy") == "allkeys-lru"
    assert "UNSAFE: allkeys-lru" in page
    assert 'class="text-danger' in page


def test_eviction_verdict() -> None:
    assert eviction_verdict("noeviction", 1024).safe
    assert eviction_verdict("noeviction", 0).safe
    for policy in ("allkeys-lru", "volatile-lru", "allkeys-random", "volatile-ttl", "allkeys-lfu"):
        assert not eviction_verdict(policy, 1024).safe


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.50 KiB"
    assert human_bytes(64 * 1024 * 1024) == "64.00 MiB"


def test_memory_samples_are_taken_once_per_interval_and_capped(r: redis.Redis) -> None:
    now = time.time()
    assert stats.record_memory_sample(r, 60, now=now - 4000)
    assert not stats.record_memory_sample(r, 60, now=now - 3990)  # another process took this turn
    r.delete("archive:stats:memory:sampler")
    assert stats.record_memory_sample(r, 60, now=now)
    samples = stats.memory_samples(r, now=now)
    assert len(samples) == 1  # the one from over an hour ago was dropped
    assert samples[0]["used_memory"] > 0 and "maxmemory" in samples[0]
    for i in range(stats.MEMORY_SAMPLES_MAX + 5):
        stats.record_memory_sample(r, 0, now=now + i * 0.001)
    assert r.zcard(KEYS.memory_samples) == stats.MEMORY_SAMPLES_MAX


def test_stats_tick_flushes_latencies_and_samples_memory_when_due(settings: Settings, r: redis.Redis) -> None:

    from producer.background import stats_tick

    app = make_app(settings, memory_sample_seconds=5.0)
    try:
        state = app.extensions["redis_archive"]
        state.enqueue_latency.observe(MEMBER_QUEUE, 0.003)
        now = time.time()
        assert stats_tick(state, 0.0, now) == now
        assert stats.histograms(r, KEYS.enqueue_latency)[MEMBER_QUEUE].count == 1
        assert r.zcard(KEYS.memory_samples) == 1
        assert stats_tick(state, now, now + 1) == now  # not due yet
        assert r.zcard(KEYS.memory_samples) == 1
        r.delete("archive:stats:memory:sampler")
        assert stats_tick(state, now, now + 5) == now + 5
        assert r.zcard(KEYS.memory_samples) == 2
    finally:
        close_app(app)


def test_stats_thread_runs_until_stopped(settings: Settings, r: redis.Redis) -> None:
    from producer.background import start_stats_thread

    app = make_app(settings, memory_sample_seconds=0.5)
    try:
        stop = start_stats_thread(app)
        deadline = time.monotonic() + 10
        while not r.zcard(KEYS.memory_samples) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        assert r.zcard(KEYS.memory_samples) >= 1
    finally:
        close_app(app)


# --- redis-archive up ---------------------------------------------------------------------------


def test_up_generates_a_dashboard_password_when_none_is_set() -> None:
    stack = Stack(redis_url="redis://127.0.0.1:1/0", env={"PATH": "/usr/bin"})
    line = stack._dashboard_login()
    password = stack.env["DASHBOARD_PASSWORD"]
    assert len(password) >= 16
    assert f"password {password}" in line and "user admin" in line
    other = Stack(redis_url="redis://127.0.0.1:1/0", env={})
    other._dashboard_login()
    assert other.env["DASHBOARD_PASSWORD"] != password


def test_up_keeps_a_given_password() -> None:
    stack = Stack(
        redis_url="redis://127.0.0.1:1/0", env={"DASHBOARD_PASSWORD": "mine", "DASHBOARD_USER": "ops"}
    )
    line = stack._dashboard_login()
    assert stack.env["DASHBOARD_PASSWORD"] == "mine"
    assert "mine" not in line and "user ops" in line


# --- a real browser against the served producer (granian) ---- ---------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@dataclass
class LiveStack:
    """A private redis-server and the served producer (granian), with jobs in the member queue."""

    base: str
    port: int
    redis_url: str
    env: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    directory = tmp_path_factory.mktemp("live")
    server = start_redis(directory / "redis")
    port = free_port()
    env = run_env(
        REDIS_URL=server.url,
        DATABASE_URL=f"sqlite:///{directory / 'archive.db'}",
        DASHBOARD_PASSWORD=PASSWORD,
        DASHBOARD_USER="admin",
        MEMORY_SAMPLE_SECONDS="1",
        API_TOKEN="",
        ALERT_WEBHOOK_URL="",
    )
    # Create the tables first: two gunicorn workers booting at once would both try to.
    engine = make_engine(env["DATABASE_URL"])
    init_db(engine)
    engine.dispose()
    log = (directory / "producer.log").open("wb")
    argv = producer_argv("127.0.0.1", port, workers=2)
    producer = procs.spawn(argv, env=env, stdout=log, stderr=log)
    try:
        assert procs.wait_until(lambda: procs.port_open("127.0.0.1", port), 30), "producer did not start"
        base = f"http://127.0.0.1:{port}"
        with requests.Session() as http:
            for i in range(5):
                assert (
                    http.post(f"{base}/queue/members", json={"name": f"done{i}", "age": 30}).status_code
                    == 202
                )
            done = subprocess.run(
                worker_argv([MEMBER_QUEUE], burst=True), env=env, capture_output=True, timeout=60
            )
            assert done.returncode == 0, done.stderr.decode()[-2000:]
            for i in range(3):
                assert (
                    http.post(f"{base}/queue/members", json={"name": f"wait{i}", "age": 30}).status_code
                    == 202
                )
        yield LiveStack(base, port, server.url, env, directory / "producer.log")
    finally:
        procs.stop(producer, timeout=15)
        log.close()
        server.kill()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        "the browser test needs Debian's chromium and chromium-driver: make test installs them as root"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1800",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_without_credentials_the_page_answers_401(live: LiveStack) -> None:
    for path in ("/dashboard/", "/dashboard/redis"):
        response = requests.get(live.base + path, timeout=10)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert response.json()["error"]["code"] == "unauthorized"
    assert requests.get(live.base + "/dashboard/", auth=("admin", PASSWORD), timeout=10).status_code == 200


def test_server_workers_run_the_stats_thread(live: LiveStack) -> None:
    conn = redis.Redis.from_url(live.redis_url)
    try:
        # Enqueue latencies of the 8 POSTs, flushed by the workers' threads without a scrape.
        def flushed() -> bool:
            histogram = stats.histograms(conn, KEYS.enqueue_latency).get(MEMBER_QUEUE)
            return histogram is not None and histogram.count == 8

        assert procs.wait_until(flushed, 10)
        assert procs.wait_until(lambda: conn.zcard(KEYS.memory_samples) >= 2, 10)
    finally:
        conn.close()


def test_browser_logs_in_and_reads_queues_and_memory(live: LiveStack, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    # Without credentials the browser gets the 401 challenge (headless: an empty page), not the dashboard.
    browser.get(live.base + "/dashboard/")
    assert not browser.find_elements(By.ID, "queues")
    assert "Redis Archive" not in browser.page_source

    # Log in: the credentials a user would type into the browser's basic-auth prompt.
    browser.get(f"http://admin:{PASSWORD}@127.0.0.1:{live.port}/dashboard/")
    row = wait.until(
        ec.presence_of_element_located(
            (By.XPATH, "//table[@id='queues']//tr[@data-role='queue'][td[1]='member']")
        )
    )
    # Chromium met the 401 challenge and answered it with the credentials. The producer's access
    # log has: remote, basic-auth user, "method path", status, duration, "user agent".
    answers = re.findall(
        r'producer\.access: \S+ (\S+) "GET /dashboard/" (\d+) .*HeadlessChrome', live.log.read_text()
    )
    assert answers[:3] == [("-", "401"), ("-", "401"), ("admin", "200")]
    cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    # Queue, queued, deferred, scheduled, started, finished, failed, canceled.
    assert cells[0] == "member"
    assert cells[1] == "3"
    assert cells[5] == "5"
    assert cells[6] == "0"
    browser.save_screenshot(str(tmp_path / "dashboard.png"))

    browser.find_element(By.ID, "redis-page-link").click()
    wait.until(ec.presence_of_element_located((By.ID, "redis-page")))
    assert browser.current_url.endswith("/dashboard/redis")

    def field(name: str) -> str:
        text: str = browser.find_element(By.CSS_SELECTOR, f"#memory [data-field='{name}']").text
        return text

    assert re.fullmatch(r"[\d.]+ (B|KiB|MiB|GiB)", field("used_memory"))
    assert re.fullmatch(r"[\d.]+ (B|KiB|MiB|GiB)", field("used_memory_peak"))
    assert re.fullmatch(r"[\d.]+ (B|KiB|MiB|GiB)", field("used_memory_rss"))
    assert float(field("mem_fragmentation_ratio")) > 0
    assert field("maxmemory") == "0 (no limit)"
    assert field("maxmemory_policy") == "noeviction"
    assert "safe" in browser.find_element(By.ID, "eviction-verdict").text
    queued = browser.find_element(
        By.CSS_SELECTOR, "#depths tr[data-queue='member'] td[data-registry='queued']"
    )
    finished = browser.find_element(
        By.CSS_SELECTOR, "#depths tr[data-queue='member'] td[data-registry='finished']"
    )
    assert (queued.text, finished.text) == ("3", "5")
    assert browser.find_element(By.CSS_SELECTOR, "#throughput [data-field='finished_last_hour']").text == "5"
    # The chart is drawn in the page (inline SVG), from samples the producer took.
    assert browser.find_elements(By.CSS_SELECTOR, "#memory-chart svg polyline#memory-line")
    # Every resource came from the app itself.
    hosts = browser.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return new URL(e.name).host; });"
    )
    assert hosts and set(hosts) == {f"127.0.0.1:{live.port}"}
    browser.save_screenshot(str(tmp_path / "redis.png"))
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    assert (tmp_path / "redis.png").stat().st_size > 10_000


def test_non_ascii_secrets(settings: Settings) -> None:
    token, password = "tökén-ü", "pässwörd"
    app = make_app(settings, dashboard_password=password, api_token=token)
    try:
        client = app.test_client()
        # Headers travel as bytes; WSGI hands them over as latin-1 text.
        as_sent = {"Authorization": "Bearer " + token.encode().decode("latin-1")}
        assert client.get("/dashboard/redis", headers=as_sent).status_code == 200
        assert client.get("/dashboard/redis", headers=basic("admin", password)).status_code == 200
        assert client.get("/dashboard/redis", headers=basic("admin", "passwort")).status_code == 401
    finally:
        close_app(app)


def test_browser_requeues_deletes_and_empties(live: LiveStack, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    conn = redis.Redis.from_url(live.redis_url)
    try:
        queue = Queue(MEMBER_QUEUE, connection=conn, serializer=JSONSerializer)
        options = job_options(Settings(job_attempts=1), "createMemberJob")
        failed = queue.enqueue(CREATE_MEMBER_JOB, {"bad": True}, at_front=True, **options)
        SimpleWorker([queue], connection=conn, serializer=JSONSerializer).work(burst=True, max_jobs=1)
        assert queue.failed_job_registry.get_job_ids() == [failed.id]
        waiting = queue.get_job_ids()
        assert len(waiting) == 3
        wait = WebDriverWait(browser, 20)

        def confirm() -> None:
            wait.until(ec.element_to_be_clickable((By.ID, "confirmation-modal-yes"))).click()

        def settle(check: Any) -> None:
            assert procs.wait_until(check, 10), "the page's action did not reach Redis"

        prefix = f"http://admin:{PASSWORD}@127.0.0.1:{live.port}/dashboard/0/view/jobs/member"
        browser.get(f"{prefix}/failed/8/asc/1")
        row = f"//tr[@data-job-id='{failed.id}']"
        wait.until(ec.element_to_be_clickable((By.XPATH, f"{row}//a[@data-role='requeue-job-btn']"))).click()
        settle(lambda: queue.get_job_ids()[-1:] == [failed.id])
        assert queue.failed_job_registry.count == 0

        browser.get(f"{prefix}/queued/8/asc/1")
        row = f"//tr[@data-job-id='{waiting[0]}']"
        wait.until(ec.element_to_be_clickable((By.XPATH, f"{row}//a[@data-role='delete-job-btn']"))).click()
        confirm()
        settle(lambda: not conn.exists(Job.key_for(waiting[0])))
        assert queue.get_job_ids() == [*waiting[1:], failed.id]

        browser.find_element(By.ID, "empty-btn").click()
        confirm()
        settle(lambda: queue.count == 0)
    finally:
        conn.close()
