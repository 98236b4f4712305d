"""A local Redis Cluster from the ``redis-server`` binary: masters, one replica each, on free ports.

``redis-archive cluster up`` runs it in the foreground for trying the queue on a cluster; the
cluster tests and ``bench/cluster.py`` use it too. The nodes are joined by
``redis-cli --cluster create ... --cluster-replicas 1``; every node dies with its parent.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from shared.exceptions import ArchiveError
from shared.stack import procs
from shared.stack.sentinel import Node

#: Cluster bus ports are the client port + 10000; keep both below 65536.
MAX_PORT = 55535


def _free_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too, not among ``taken``."""
    while True:
        port = procs.free_port()
        if port <= MAX_PORT and port not in taken and port + 10000 not in taken and _bindable(port + 10000):
            return port


def _cli_beside(binary: str) -> str | None:
    """The command-line client of ``binary``'s family: beside it, else on PATH."""
    here = Path(shutil.which(binary) or binary).parent
    for name in ("valkey-cli", "redis-cli") if "valkey" in Path(binary).name else ("redis-cli", "valkey-cli"):
        if (here / name).exists():
            return str(here / name)
    return shutil.which("redis-cli") or shutil.which("valkey-cli")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, joined into one Redis Cluster."""

    binary: str
    directory: Path
    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = 1000
    cli: str | None = None
    nodes: list[Node] = field(default_factory=list)

    def _argv(self, port: int, directory: Path) -> list[str]:
        return [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--dir", str(directory),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(directory / "redis.log"),
            # Replicas start streaming at once instead of waiting 5 s for more replicas to join.
            "--repl-diskless-sync-delay", "0",
            # A node lists a replica in CLUSTER SLOTS once the replica's offset is non-zero; on an
            # empty cluster only the master's pings move it, every 10 s by default.
            "--repl-ping-replica-period", "1",
        ]  # fmt: skip

    @property
    def seeds(self) -> list[tuple[str, int]]:
        """Every node's address."""
        return [node.address for node in self.nodes]

    @property
    def env(self) -> dict[str, str]:
        """The environment that points the system at this cluster."""
        return {"REDIS_CLUSTER_NODES": ",".join(f"{host}:{port}" for host, port in self.seeds)}

    def start(self, timeout: float = 30.0) -> None:
        """Start the nodes, join them, wait until every slot is served and every replica synced."""
        cli = self.cli or _cli_beside(self.binary)
        if cli is None:
            raise ArchiveError(
                "redis-cli (or valkey-cli) is needed to create a cluster; it comes with the server"
            )
        self.directory = self.directory.resolve()
        taken: set[int] = set()
        for i in range(self.masters * (1 + self.replicas)):
            port = _free_port(taken)
            taken.update((port, port + 10000))
            directory = self.directory / f"node-{port}"
            node = Node(f"node-{i + 1}", port, directory, self._argv(port, directory))
            node.start()
            self.nodes.append(node)
        deadline = time.monotonic() + timeout
        ports = [node.port for node in self.nodes]
        if not procs.wait_until(lambda: all(procs.port_open("127.0.0.1", p) for p in ports), timeout):
            dead = [node for node in self.nodes if not procs.port_open("127.0.0.1", node.port)]
            tails = "; ".join(f"{n.port}: {_tail(n.directory / 'redis.log')}" for n in dead)
            raise ArchiveError(f"cluster nodes did not start: {tails}")
        create = [cli, "--cluster", "create", *(f"{h}:{p}" for h, p in self.seeds)]
        create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        out = subprocess.run(create, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise ArchiveError(f"redis-cli --cluster create failed: {out.stdout[-500:]} {out.stderr[-500:]}")
        if not procs.wait_until(self._ready, max(1.0, deadline - time.monotonic()), interval=0.1):
            raise ArchiveError(
                "the cluster did not become ready (slots served, replicas in sync and known to every node)"
            )

    def client(self, node: Node) -> Redis:
        """A plain client of one node."""
        return Redis(host="127.0.0.1", port=node.port, socket_timeout=2, socket_connect_timeout=1)

    def _ready(self) -> bool:
        try:
            for node in self.nodes:
                client = self.client(node)
                try:
                    info = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" not in text:
                        return False
                    role = client.info("replication")
                    if role.get("role") == "master" and int(role.get("connected_slaves", 0)) < self.replicas:
                        return False
                    # Every node's own map names every master's replicas (gossip lags the
                    # replication link by a moment): what clients and failover votes go by.
                    slots = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
                    masters = {(bytes(item[2][0]), int(item[2][1])) for item in slots}
                    if len(masters) < self.masters or any(len(item) - 3 < self.replicas for item in slots):
                        return False
                finally:
                    client.close()
            return True
        except RedisError:
            return False

    def master_of(self, slot: int) -> Node:
        """The node that serves ``slot`` now."""
        for node in self.nodes:
            if not node.alive():
                continue
            client = self.client(node)
            try:
                for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):  # type: ignore[no-untyped-call]
                    if int(start) <= slot <= int(end):
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
            except RedisError:
                continue
            finally:
                client.close()
        raise ArchiveError(f"no live node knows the master of slot {slot}")

    def wait_for_new_master(self, slot: int, old: Node, timeout: float = 30.0) -> Node:
        """Block until a node other than ``old`` serves ``slot`` (the replica's promotion)."""
        found: list[Node] = []

        def promoted() -> bool:
            try:
                node = self.master_of(slot)
            except ArchiveError:
                return False
            if node is old:
                return False
            found.append(node)
            return True

        if not procs.wait_until(promoted, timeout, interval=0.1):
            raise ArchiveError(f"no replica took over slot {slot} within {timeout}s")
        return found[-1]

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()


def _tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-3:])
    except OSError:
        return "(no log)"
