"""The dashboard in a real browser (headless Chromium) against the served producer (granian)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from producer.enqueue import job_options
from shared import stats
from shared.constants import (
    CREATE_MEMBER_JOB,
    MEMBER_QUEUE,
)
from shared.db import init_db, make_engine
from shared.keys import KEYS
from shared.settings import Settings
from shared.stack.local import procs, producer_argv, worker_argv
from shared.stack.procs import free_port
from tests.producer.dashboard_support import PASSWORD
from tests.servers import run_env, start_redis

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
