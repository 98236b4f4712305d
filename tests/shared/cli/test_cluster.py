"""``redis-archive cluster up`` and ``cluster status``: a local cluster to try the queue on."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from shared.cli.main import main
from shared.stack import procs
from tests.servers import ROOT

NODE_LINE = re.compile(r"^\S+\s+127\.0\.0\.1:(\d+)\s+(master|slave)\s+pid \d+$")


def test_cluster_up_prints_its_env_status_follows_it_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "cluster", "up", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        text=True,
    )
    lines: list[str] = []
    ports: list[int] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("ready;"):
                break
        assert lines and lines[-1].startswith("ready;"), lines
        assert lines[0].startswith("server    ")
        nodes = [match for line in lines if (match := NODE_LINE.match(line))]
        ports = [int(match.group(1)) for match in nodes]
        assert [match.group(2) for match in nodes].count("master") == 3, lines
        assert len(nodes) == 6, lines
        env = dict(line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export "))
        assert env["QUEUE_NAMESPACES"] == "member=3"
        assert sorted(int(a.rsplit(":", 1)[1]) for a in env["REDIS_CLUSTER_NODES"].split(",")) == sorted(
            ports
        )

        result = CliRunner().invoke(main, ["cluster", "status"], env=env)
        assert result.exit_code == 0, result.output
        masters = [line for line in result.output.splitlines() if line.startswith("master  ")]
        assert len(masters) == 3 and all("replicas 127.0.0.1:" in line for line in masters), result.output
        member = [line for line in result.output.splitlines() if line.startswith("queue member ")]
        assert len(member) == 3, result.output
        # One namespace of the queue on each master of a fresh cluster.
        owners = {line.rsplit(" on ", 1)[1] for line in member}
        assert len(owners) == 3 and owners <= {line.split()[1] for line in masters}, result.output
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert out.rstrip().endswith("stopped")
    assert not any(procs.port_open("127.0.0.1", port) for port in ports)


def test_cluster_status_without_nodes_is_a_clean_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_CLUSTER_NODES"}
    result = CliRunner().invoke(main, ["cluster", "status"], env={**env, "REDIS_CLUSTER_NODES": ""})
    assert result.exit_code == 1
    assert "REDIS_CLUSTER_NODES is not set" in result.output


def test_cluster_up_refuses_fewer_than_three_masters() -> None:
    result = CliRunner().invoke(main, ["cluster", "up", "--masters", "2"])
    assert result.exit_code == 2
    assert "--masters" in result.output
