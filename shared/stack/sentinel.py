"""A local Sentinel topology from the ``redis-server`` binary: one master, replicas, Sentinels.

``redis-archive ha up`` runs it in the foreground for trying failover by hand; the failover
test and ``bench/failover.py`` use it too. Every process listens on a free loopback port and
dies with its parent.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from shared.exceptions import ArchiveError
from shared.stack import procs

logger = logging.getLogger(__name__)


@dataclass
class Node:
    """One ``redis-server`` process: a data node or a Sentinel."""

    name: str
    port: int
    directory: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the process (again)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = procs.spawn(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` and wait for the process to end."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is not None:
            procs.stop(self.proc, timeout=10)


@dataclass
class HaCluster:
    """A master, ``replicas`` replicas and ``sentinels`` Sentinels on free loopback ports."""

    binary: str
    directory: Path
    master_name: str = "mymaster"
    replicas: int = 2
    sentinels: int = 3
    quorum: int = 2
    down_after_ms: int = 1000
    failover_timeout_ms: int = 10000
    password: str | None = None
    sentinel_password: str | None = None
    #: Data nodes keep an append-only file (fsync every second), so a restarted node keeps its data.
    appendonly: bool = False
    data_nodes: list[Node] = field(default_factory=list)
    sentinel_nodes: list[Node] = field(default_factory=list)

    def _data_argv(self, port: int, directory: Path, replica_of: int | None) -> list[str]:
        argv = [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--maxmemory-policy", "noeviction",
            # Replicas start streaming at once instead of waiting 5 s for more replicas to join.
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password, "--masterauth", self.password]
        if replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
        return argv

    def _sentinel_conf(self, port: int, directory: Path, master_port: int) -> Path:
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {directory}",
            f"logfile {directory / 'sentinel.log'}",
            f"sentinel monitor {self.master_name} 127.0.0.1 {master_port} {self.quorum}",
            f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}",
            f"sentinel failover-timeout {self.master_name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.master_name} {max(1, self.replicas)}",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {self.master_name} {self.password}")
        if self.sentinel_password:
            lines += [
                f"requirepass {self.sentinel_password}",
                f"sentinel sentinel-pass {self.sentinel_password}",
            ]
        conf = directory / "sentinel.conf"
        directory.mkdir(parents=True, exist_ok=True)
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 30.0) -> None:
        """Start every process and wait until the Sentinels agree on the topology."""
        master_port = procs.free_port()
        master_dir = self.directory / "master"
        master_argv = self._data_argv(master_port, master_dir, None)
        self.data_nodes = [Node("master", master_port, master_dir, master_argv)]
        for i in range(self.replicas):
            port = procs.free_port()
            directory = self.directory / f"replica-{i + 1}"
            self.data_nodes.append(
                Node(f"replica-{i + 1}", port, directory, self._data_argv(port, directory, master_port))
            )
        for node in self.data_nodes:
            node.start()
        try:
            for node in self.data_nodes:
                self._wait(lambda n=node: self._pings(n), timeout, f"{node.name} did not start")
            self._wait(lambda: self._online_replicas() >= self.replicas, timeout, "replicas did not sync")
            for i in range(self.sentinels):
                port = procs.free_port()
                directory = self.directory / f"sentinel-{i + 1}"
                conf = self._sentinel_conf(port, directory, master_port)
                node = Node(f"sentinel-{i + 1}", port, directory, [self.binary, str(conf), "--sentinel"])
                self.sentinel_nodes.append(node)
                node.start()
            self._wait(self._sentinels_agree, timeout, "the Sentinels did not discover each other")
        except BaseException:
            logger.error("HA topology did not start; logs are in %s", self.directory)
            self.stop()
            raise

    @staticmethod
    def _wait(check: Any, timeout: float, message: str) -> None:
        if not procs.wait_until(check, timeout, interval=0.1):
            raise ArchiveError(message)

    def client(self, node: Node, **options: Any) -> Redis:
        """A plain client of ``node`` (a data node or a Sentinel)."""
        password = self.sentinel_password if node in self.sentinel_nodes else self.password
        return Redis(port=node.port, password=password, socket_timeout=2, **options)

    def _pings(self, node: Node) -> bool:
        with self.client(node) as client:
            try:
                return bool(client.ping())
            except RedisConnectionError:
                return False

    def _online_replicas(self) -> int:
        with self.client(self.data_nodes[0]) as client:
            info = client.info("replication")
        return sum(
            1
            for key, value in info.items()
            if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
        )

    def _sentinels_agree(self) -> bool:
        for node in self.sentinel_nodes:
            with self.client(node) as client:
                try:
                    state: dict[str, Any] = client.sentinel_master(self.master_name)
                except RedisError:
                    return False
            if int(state.get("num-slaves", 0)) < self.replicas:
                return False
            if int(state.get("num-other-sentinels", 0)) < self.sentinels - 1:
                return False
        return True

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [node.address for node in self.sentinel_nodes]

    def env(self) -> dict[str, str]:
        """The environment that points the producer, workers and CLI at this topology."""
        env = {
            "REDIS_SENTINELS": ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses),
            "REDIS_SENTINEL_MASTER": self.master_name,
        }
        if self.password:
            env["REDIS_PASSWORD"] = self.password
        if self.sentinel_password:
            env["REDIS_SENTINEL_PASSWORD"] = self.sentinel_password
        return env

    def master_address(self) -> tuple[str, int] | None:
        """The master that the first reachable Sentinel names, or ``None``."""
        for node in self.sentinel_nodes:
            if not node.alive():
                continue
            with self.client(node) as client:
                try:
                    reply = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
                except RedisError:
                    continue
            if reply:
                host, port = reply
                return (host.decode() if isinstance(host, bytes) else str(host), int(port))
        return None

    def master(self) -> Node:
        """The data node the Sentinels currently name as master."""
        address = self.master_address()
        for node in self.data_nodes:
            if node.address == address:
                return node
        raise ArchiveError(f"no data node at the Sentinels' master address {address}")

    def kill_master(self) -> Node:
        """SIGKILL the current master; returns its node."""
        node = self.master()
        logger.info("killing master %s on port %s", node.name, node.port)
        node.kill(signal.SIGKILL)
        return node

    def role(self, node: Node) -> str:
        """``master`` or ``slave``, as the node itself says."""
        with self.client(node) as client:
            role = client.execute_command("ROLE")
        value = role[0]
        return value.decode() if isinstance(value, bytes) else str(value)

    def start_node(self, node: Node, replica_of: Node | None) -> None:
        """Start a stopped data node as a master or as a replica of ``replica_of``.

        Nodes started from a command line have no config file for the Sentinels to rewrite, so
        the role a node starts with is chosen here: the one it had, or a replica of the master
        that replaced it (a node started with the replica-of of its first start would follow a
        node that may itself be a replica now, and empty itself syncing from it).
        """
        node.argv = self._data_argv(node.port, node.directory, replica_of.port if replica_of else None)
        node.start()

    def restart(self, node: Node, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop ``node`` (SIGTERM: a data node writes its append-only file first) and start it again.

        It comes back in the role it had (a master with its data when the cluster keeps
        append-only files); a node replaced while away is turned into a replica by the Sentinels.
        """
        master = None if self.role(node) == "master" else self.master()
        node.kill(sig)
        self.start_node(node, master)
        self._wait(lambda: self._pings(node), timeout, f"{node.name} did not come back")

    def wait_for_new_master(self, old: Node, timeout: float = 30.0) -> Node:
        """Wait until the Sentinels name another master and it answers as one."""

        def promoted() -> bool:
            address = self.master_address()
            if address is None or address == old.address:
                return False
            node = next((n for n in self.data_nodes if n.address == address), None)
            if node is None or not node.alive():
                return False
            with self.client(node) as client:
                role = client.execute_command("ROLE")
            return bool(role) and role[0] in (b"master", "master")

        self._wait(promoted, timeout, "no replica was promoted")
        return self.master()

    def stop(self) -> None:
        """Stop the Sentinels first (no failover on the way down), then the data nodes."""
        for node in self.sentinel_nodes + self.data_nodes:
            node.stop()
