"""The queue on a real Redis Cluster (3 masters, 3 replicas): namespaces, workers, failover, lock, cache."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis
from redis.crc import key_slot
from sqlalchemy import select

from producer import create_app
from shared.cluster.clients import cluster_map, namespace_env, namespaces, slot_client
from shared.db import make_engine, member
from shared.exceptions import ConfigurationError
from shared.lock import Redlock
from shared.lock.redlock import lock_keys
from shared.settings import Settings
from shared.stack.cluster import LocalCluster
from shared.stack.local import producer_argv
from shared.stack.procs import free_port, port_open, wait_until
from tests.servers import close_app, kill_all, run_env

pytestmark = pytest.mark.slow

REDIS_SERVER = shutil.which("redis-server") or "redis-server"
RQ = [sys.executable, "-m", "rq.cli", "worker", "-c", "consumer.settings", "-S", "json"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Six redis-server --cluster-enabled nodes joined by redis-cli: 3 masters, 1 replica each."""
    local = LocalCluster(REDIS_SERVER, tmp_path / "cluster")
    try:
        local.start()
        yield local
    finally:
        local.stop()


def cluster_settings(local: LocalCluster, **changes: Any) -> Settings:
    env = {**local.env, "QUEUE_NAMESPACES": "member=3"}
    return Settings.from_env(env).with_overrides(**changes)


@dataclass
class Stack:
    """Producer and workers against the cluster, their logs in ``directory``."""

    base: str
    env: dict[str, str]
    db_url: str
    directory: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], name: str, **env: str) -> subprocess.Popen[bytes]:
        with open(self.directory / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(argv, env={**self.env, **env}, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace")[-3000:] for path in self.directory.glob("*.log"))


def start_stack(local: LocalCluster, directory: Path, worker: str, **extra: str) -> Stack:
    db_url = f"sqlite:///{directory / 'cluster.db'}"
    env = run_env(
        **local.env,
        QUEUE_NAMESPACES="member=3",
        DATABASE_URL=db_url,
        LOG_LEVEL="INFO",
        MEMORY_SAMPLE_SECONDS="0",
        HEARTBEAT_TIMEOUT="5",
        **extra,
    )
    port = free_port()
    stack = Stack(f"http://127.0.0.1:{port}", env, db_url, directory)
    settings = Settings.from_env(env)
    plan = namespaces(settings)
    stack.start(producer_argv("127.0.0.1", port, workers=1), "producer", RQ_KEY_PREFIX=plan["member"][0].tag)
    if worker == "fast":
        # One command starts a FastWorker process per namespace of the queue.
        stack.start([sys.executable, "-m", "shared.cli", "worker", "member"], "workers")
    else:
        # Plain `rq worker` with RQ's in-process SimpleWorker, one per namespace (RQ's forking
        # Worker passes too, at a fork per job: 100 s for these 2,000 jobs on two cores).
        for namespace in plan["member"]:
            argv = [*RQ, "-w", "rq.worker.SimpleWorker", "member"]
            stack.start(argv, f"worker-{namespace.tag}", **namespace_env(namespace.tag))
    assert wait_until(lambda: port_open("127.0.0.1", port), 30), stack.logs()
    return stack


def rows(db_url: str) -> list[str]:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        found = [row.job_id for row in conn.execute(select(member.c.job_id))]
    engine.dispose()
    return found


@pytest.mark.parametrize("worker", ["fast", "plain"])
def test_2000_members_over_3_namespaces_on_3_masters(
    cluster: LocalCluster, tmp_path: Path, worker: str
) -> None:
    stack = start_stack(cluster, tmp_path, worker)
    try:
        settings = Settings.from_env(stack.env)
        plan = namespaces(settings)["member"]
        masters = {cluster_map(settings).owner(ns.slot) for ns in plan}
        assert len(masters) == 3, "the three namespaces sit on three different masters"
        local = threading.local()

        def post(i: int) -> str:
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            response = session.post(f"{stack.base}/queue/members", json={"name": f"m{i}", "age": i % 100})
            assert response.status_code == 202, response.text
            return str(response.json()["jobId"])

        with ThreadPoolExecutor(8) as pool:
            job_ids = list(pool.map(post, range(2000)))
        assert len(set(job_ids)) == 2000
        assert wait_until(lambda: len(rows(stack.db_url)) >= 2000, 240, interval=0.5), stack.logs()
        time.sleep(0.5)
        written = rows(stack.db_url)
        assert len(written) == 2000 and set(written) == set(job_ids)
        # Every namespace got its share, in its own slot on its own master.
        per_space = {}
        for namespace in plan:
            client = slot_client(settings, namespace.tag)
            per_space[namespace.tag] = client.zcard(namespace.keys.finished("member"))
            assert client.dbsize() > 0
            client.close()
        assert sum(per_space.values()) == 2000, per_space
        assert all(count > 500 for count in per_space.values()), per_space
        for node in cluster.nodes:
            client = cluster.client(node)
            if client.info("replication")["role"] == "master":
                stray = [k for k in client.scan_iter(count=1000) if b"{" not in k]
                assert stray == [], f"keys outside every namespace on {node.port}: {stray[:5]}"
            client.close()
        # The job status is found in whichever namespace holds it; /metrics sums them.
        info = requests.get(f"{stack.base}/jobs/{job_ids[-1]}", timeout=10).json()
        assert info["status"] == "finished"
        metrics = requests.get(f"{stack.base}/metrics", timeout=10).text
        assert 'archive_queue_jobs{queue="member",registry="finished"} 2000.0' in metrics
        assert 'archive_jobs_enqueued_total{queue="member"} 2000.0' in metrics
    finally:
        kill_all(stack.procs)


def test_routing_key_keeps_related_jobs_in_one_namespace(cluster: LocalCluster) -> None:
    app = create_app({"TESTING": True, **asdict(cluster_settings(cluster))})
    try:
        client = app.test_client()
        state = app.extensions["redis_archive"]
        spaces = state.spaces_of("member")
        ids = [
            client.post("/queue/members?routing_key=customer-42", json={"name": "a", "age": i}).get_json()[
                "jobId"
            ]
            for i in range(12)
        ]
        homes = {
            next(s.keys.rq_prefix for s in spaces if s.client.exists(s.keys.job(job_id))) for job_id in ids
        }
        assert len(homes) == 1
        # Without a key the namespaces take turns; a bulk request stays in one.
        spread = [
            client.post("/queue/members", json={"name": "b", "age": 1}).get_json()["jobId"] for _ in range(6)
        ]
        assert (
            len({next(s.keys.rq_prefix for s in spaces if s.client.exists(s.keys.job(j))) for j in spread})
            == 3
        )
        bulk = client.post("/queue/members/bulk", json={"members": [{"name": "c", "age": 2}] * 20}).get_json()
        assert (
            len(
                {
                    next(s.keys.rq_prefix for s in spaces if s.client.exists(s.keys.job(j)))
                    for j in bulk["jobIds"]
                }
            )
            == 1
        )
        assert client.get(f"/jobs/{bulk['jobIds'][0]}").get_json()["status"] == "queued"
    finally:
        close_app(app)


def test_failover_under_load_loses_no_acknowledged_job(cluster: LocalCluster, tmp_path: Path) -> None:
    stack = start_stack(cluster, tmp_path, "fast", ENQUEUE_MIN_REPLICAS="1", ENQUEUE_RETRY_SECONDS="15")
    try:
        settings = Settings.from_env(stack.env)
        victim_space = namespaces(settings)["member"][1]
        accepted: list[tuple[float, str]] = []
        refused: list[int] = []
        stop = threading.Event()

        def load() -> None:
            with requests.Session() as session:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        response = session.post(
                            f"{stack.base}/queue/members", json={"name": f"f{i}", "age": 1}, timeout=30
                        )
                    except requests.RequestException:
                        refused.append(-1)
                        continue
                    if response.status_code == 202:
                        accepted.append((time.monotonic(), response.json()["jobId"]))
                    else:
                        assert response.status_code == 503, response.text
                        assert response.headers.get("Retry-After")
                        refused.append(response.status_code)
                    time.sleep(0.01)

        threads = [threading.Thread(target=load) for _ in range(3)]
        for thread in threads:
            thread.start()
        assert wait_until(lambda: len(accepted) > 100, 30)
        victim = cluster.master_of(victim_space.slot)
        assert victim.proc is not None
        killed = time.monotonic()
        victim.kill(signal.SIGKILL)
        promoted = cluster.wait_for_new_master(victim_space.slot, victim, timeout=30)
        # The promoted replica has no replica of its own until the old master comes back (as
        # its replica): durable enqueues to that namespace wait for it, as with Sentinel.
        victim.start()

        def replicated() -> bool:
            client = cluster.client(promoted)
            try:
                return int(client.info("replication").get("connected_slaves", 0)) >= 1
            finally:
                client.close()

        assert wait_until(replicated, 30), "the old master did not come back as a replica"
        time.sleep(2)
        stop.set()
        for thread in threads:
            thread.join(60)
        after = [stamp for stamp, _ in accepted if stamp > killed]
        assert after, "no enqueue after the kill"
        # Requests keep being answered: none waited more than 10 s past the kill for its 202.
        gaps = [b - a for a, b in zip([killed, *after], after, strict=False)]
        assert max(gaps) < 10, max(gaps)
        job_ids = [job_id for _, job_id in accepted]
        assert wait_until(lambda: len(rows(stack.db_url)) >= len(job_ids), 120, interval=0.5), stack.logs()
        time.sleep(1)
        written = rows(stack.db_url)
        assert set(job_ids) <= set(written), f"lost: {len(set(job_ids) - set(written))}"
        assert len(written) == len(set(written)), "a job was written twice"
        # Every worker is alive and takes new jobs in every namespace.
        assert all(proc.poll() is None for proc in stack.procs), stack.logs()
        fresh = [
            requests.post(
                f"{stack.base}/queue/members", json={"name": f"after{i}", "age": 2}, timeout=30
            ).json()["jobId"]
            for i in range(9)
        ]
        assert wait_until(lambda: set(fresh) <= set(rows(stack.db_url)), 60, interval=0.5), stack.logs()
    finally:
        kill_all(stack.procs)


def test_a_cluster_node_without_namespaces_is_refused_with_the_settings_to_use(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    host, port = cluster.seeds[0]
    plain = Settings.from_env({"REDIS_URL": f"redis://{host}:{port}/0"})
    with pytest.raises(ConfigurationError, match="REDIS_CLUSTER_NODES"):
        create_app({"TESTING": True, **asdict(plain)})
    env = run_env(REDIS_URL=f"redis://{host}:{port}/0", DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    env.pop("REDIS_CLUSTER_NODES", None)
    out = subprocess.run([*RQ, "--burst", "member"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 78
    assert "REDIS_CLUSTER_NODES" in out.stderr and "CROSSSLOT" in out.stderr and "Traceback" not in out.stderr
    # With the cluster configured, a plain `rq worker` still needs a namespace to serve.
    env.update(cluster.env)
    out = subprocess.run([*RQ, "--burst", "member"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 78
    assert (
        "RQ_KEY_PREFIX" in out.stderr
        and "redis-archive worker" in out.stderr
        and "Traceback" not in out.stderr
    )


def test_lock_and_cache_on_the_cluster(cluster: LocalCluster) -> None:
    settings = cluster_settings(cluster)
    # Every key of one lock name shares its hash tag, so one master runs the lock's scripts.
    assert len({key_slot(key.encode()) for key in lock_keys("goods:7")}) == 1
    redlock = Redlock.from_settings(settings)
    try:
        fences = []
        for name in ("goods:1", "goods:2", "report", "goods:7"):
            with redlock.lock(name, ttl=5) as lease:
                fences.append(lease.fence)
        with redlock.lock("goods:7", ttl=5) as lease:
            assert lease.fence > fences[-1]
    finally:
        redlock.close()

    app = create_app({"TESTING": True, **asdict(settings)})
    try:
        client = app.test_client()
        keys = [f"user/{i} profile" for i in range(30)]
        for key in keys:
            response = client.post("/api/v1/redis", json={"key": key, "value": {"n": key}, "expire": 60000})
            assert response.status_code == 201, response.get_json()
        for key in keys:
            assert client.get(f"/api/v1/redis/{requests.utils.quote(key)}").get_json()["value"] == {"n": key}
        assert client.delete(f"/api/v1/redis/{requests.utils.quote(keys[0])}").status_code == 200
        holders = set()
        for node in cluster.nodes:
            node_client: Redis = cluster.client(node)
            if any(k.startswith(b"archive:cache:") for k in node_client.scan_iter(count=1000)):
                holders.add(node.port)
            node_client.close()
        assert len(holders) >= 2, "cache keys spread over the masters"
    finally:
        close_app(app)


def test_up_runs_a_worker_and_a_monitor_for_every_namespace(cluster: LocalCluster, tmp_path: Path) -> None:
    port = free_port()
    env = run_env(
        **cluster.env,
        QUEUE_NAMESPACES="member=2",
        DATABASE_URL=f"sqlite:///{tmp_path / 'up.db'}",
        DASHBOARD_PASSWORD="x",
        MEMORY_SAMPLE_SECONDS="0",
    )
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "up", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        # "ready" alone would also match "already exists" in some child's traceback.
        assert wait_until(lambda: "\nready; Ctrl-C" in log_path.read_text(), 60), log_path.read_text()
        out = log_path.read_text()
        assert "Redis Cluster, seed nodes" in out
        tags = [ns.tag for ns in namespaces(Settings.from_env(env))["member"]]
        assert len(tags) == 2 and all(f"worker {tag}#1" in out and f"monitor {tag}" in out for tag in tags), (
            out
        )
        ids = [
            requests.post(f"http://127.0.0.1:{port}/queue/members", json={"name": f"u{i}", "age": 1}).json()[
                "jobId"
            ]
            for i in range(6)
        ]
        assert wait_until(lambda: set(ids) <= set(rows(f"sqlite:///{tmp_path / 'up.db'}")), 60), (
            log_path.read_text()
        )
        page = requests.get(f"http://127.0.0.1:{port}/dashboard/redis", auth=("admin", "x"), timeout=10).text
        assert all(f'data-namespace="{tag}"' in page for tag in tags)
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0, log_path.read_text()
