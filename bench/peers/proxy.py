"""A TCP delay proxy: Redis about a millisecond away, on loopback.

``python -m bench.peers.proxy --target 127.0.0.1:6379 --delay-ms 0.5`` listens on a free
loopback port (printed on its first line) and forwards every connection to the target, holding
each chunk it reads for the delay before writing it on, in order, in both directions.

One thread runs one ``select`` loop over every socket: ``select`` takes its timeout in
microseconds, where asyncio's ``epoll`` waits in whole milliseconds (a 0.5 ms hold would become
1 ms), and a single thread spends no wake-ups handing chunks between threads. Both sockets of a
pair run with ``TCP_NODELAY``, as Redis clients do.
"""

from __future__ import annotations

import argparse
import select
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 65536


@dataclass
class _Direction:
    """One direction of a connection: chunks read from ``source``, each due for ``sink`` at a time."""

    source: socket.socket
    sink: socket.socket
    held: deque[tuple[float, bytes]] = field(default_factory=deque)
    closed: bool = False


class DelayProxy:
    """Forwards connections accepted on ``listener`` to ``target``, ``delay`` seconds each way."""

    def __init__(self, listener: socket.socket, target: tuple[str, int], delay: float) -> None:
        self.listener = listener
        self.target = target
        self.delay = delay
        self.directions: dict[socket.socket, _Direction] = {}

    def serve_forever(self) -> None:
        """Accept, read, hold and write until killed."""
        while True:
            due = min((d.held[0][0] for d in self.directions.values() if d.held), default=None)
            timeout = None if due is None else max(0.0, due - time.monotonic())
            readers = [self.listener, *(s for s, d in self.directions.items() if not d.closed)]
            readable, _, _ = select.select(readers, [], [], timeout)
            now = time.monotonic()
            for sock in readable:
                if sock is self.listener:
                    self._accept()
                else:
                    self._read(self.directions[sock], now)
            self._write_due(time.monotonic())

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.directions[client] = _Direction(client, upstream)
        self.directions[upstream] = _Direction(upstream, client)

    def _read(self, direction: _Direction, now: float) -> None:
        try:
            data = direction.source.recv(CHUNK)
        except OSError:
            data = b""
        direction.held.append((now + self.delay, data))
        if not data:
            direction.closed = True

    def _write_due(self, now: float) -> None:
        for direction in list(self.directions.values()):
            while direction.held and direction.held[0][0] <= now:
                _, data = direction.held.popleft()
                try:
                    if data:
                        direction.sink.sendall(data)
                    else:
                        direction.sink.shutdown(socket.SHUT_WR)
                except OSError:
                    direction.held.clear()
                    direction.closed = True
            if direction.closed and not direction.held:
                self._forget(direction)

    def _forget(self, direction: _Direction) -> None:
        """Close a pair once both of its directions are closed and drained."""
        other = self.directions.get(direction.sink)
        if other is not None and not (other.closed and not other.held):
            return
        for sock in (direction.source, direction.sink):
            self.directions.pop(sock, None)
            sock.close()


def main() -> None:
    """Run the proxy until killed; print the port it listens on."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--delay-ms", type=float, default=0.5, help="added in each direction")
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    print(listener.getsockname()[1], flush=True)
    DelayProxy(listener, (host, int(port)), args.delay_ms / 1000).serve_forever()


@contextmanager
def delay_proxy(redis_url: str, delay_ms: float) -> Iterator[str]:
    """A proxy process in front of ``redis_url``; yields the URL that reaches Redis through it."""
    parts = urlsplit(redis_url)
    target = f"{parts.hostname}:{parts.port}"
    argv = [sys.executable, "-m", "bench.peers.proxy", "--target", target, "--delay-ms", str(delay_ms)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=ROOT, text=True) as proc:
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline())
            netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
            yield urlunsplit(parts._replace(netloc=netloc))
        finally:
            proc.kill()


if __name__ == "__main__":
    main()
