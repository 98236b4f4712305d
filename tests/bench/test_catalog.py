"""Every peer is pinned exactly (with hashes), and every command it runs names files that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.peers import envs
from bench.peers.catalog import DEFAULT, PEERS
from bench.run import parse

ROOT = Path(__file__).resolve().parents[2]
QUEUES = ROOT / "bench" / "peers" / "queues"


@pytest.mark.parametrize("name", sorted({peer.env for peer in PEERS.values()} - {"main", "node"}))
def test_python_peers_are_pinned_with_hashes(name: str) -> None:
    text = envs.PythonEnv(name).requirements.read_text()
    blocks = re.split(r"\n(?=[A-Za-z])", text.split("\n", 2)[2])
    packages = [block for block in blocks if not block.startswith("#") and block.strip()]
    assert packages
    for block in packages:
        assert re.match(r"^[A-Za-z0-9_.\-\[\]]+==\S+", block), block
        assert "--hash=sha256:" in block, block
    assert name in envs.PythonEnv(name).pins()


def test_node_peers_are_locked() -> None:
    package = json.loads((envs.NODE_DIR / "package.json").read_text())
    lock = json.loads((envs.NODE_DIR / "package-lock.json").read_text())
    for name, version in package["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned exactly"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
        assert lock["packages"][f"node_modules/{name}"]["integrity"].startswith("sha512-")
    assert envs.node_version("bullmq") == package["dependencies"]["bullmq"]


@pytest.mark.parametrize("key", list(PEERS))
def test_each_peer_runs_its_own_cli_on_modules_that_exist(key: str) -> None:
    peer = PEERS[key]
    argv = peer.worker(7)
    assert ("7" in argv) != (peer.single or key in ("saq", "arq") or key == "ours"), argv
    if peer.env == "node":
        assert Path(argv[1]).exists()
    else:
        assert (QUEUES / f"{peer.module}.py").exists()
        assert argv[0].startswith(str(peer.python.path)) or peer.env == "main"
    assert peer.environ("redis://127.0.0.1:1/0", Path("/tmp/stamps"), 7)["BENCH_CONCURRENCY"] == "7"


def test_ours_runs_with_its_defaults_whatever_the_shell_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_BATCH", "50")
    env = PEERS["ours"].environ("redis://127.0.0.1:1/0", Path("/tmp/stamps"), 10)
    assert "WORKER_BATCH" not in env
    assert env["WORKER_CONCURRENCY"] == "10"
    assert env["REDIS_URL"] == "redis://127.0.0.1:1/0"


def test_bench_args_choose_the_peers_table() -> None:
    args, parts = parse(["--regimes", "io,latency", "--peers", "celery-threads,bullmq"])
    assert parts == ["peers"]
    assert args.regimes == ["io", "latency"] and args.peers == ["celery-threads", "bullmq"]
    assert parse([])[1] == ["worker", "enqueue", "http", "peers"]
    assert parse(["--only", "worker"])[1] == ["worker"]
    assert DEFAULT[0] == "ours"
    with pytest.raises(SystemExit):
        parse(["--peers", "nosuchqueue"])
