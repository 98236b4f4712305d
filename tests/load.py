"""Load for whole-stack runs: a client POSTing member jobs at a steady rate, recording every answer.

The mixed-fault soak runs one per lane; the failover scenario and the database outage test one each.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass


@dataclass
class Post:
    """One request: when it was sent and answered, and how."""

    sent: float
    done: float
    status: int
    job_id: str | None = None
    #: The error body's ``code`` (``unavailable``, ``out_of_memory``), or what went wrong.
    reason: str | None = None
    retry_after: str | None = None


class Client(threading.Thread):
    """POSTs member jobs to one producer at ``rate`` per second until stopped.

    ``lane`` names the thread and the members; ``timeout`` bounds one request.
    """

    def __init__(self, port: int, rate: float, lane: str = "member", timeout: float = 60.0) -> None:
        super().__init__(daemon=True, name=f"client-{lane}")
        self.lane = lane
        self.port = port
        self.timeout = timeout
        self.interval = 1.0 / rate
        self.posts: list[Post] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        n = 0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            n += 1
            body = json.dumps({"name": f"{self.lane} {n}", "age": n % 150, "email": f"m{n}@example.com"})
            post = Post(time.monotonic(), 0.0, 0)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                conn.request("POST", "/queue/members", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                post.status = response.status
                post.retry_after = response.getheader("Retry-After")
                data = json.loads(payload) if payload else {}
                if post.status == 202:
                    post.job_id = data["jobId"]
                else:
                    error = data.get("error", {})
                    post.reason = f"{error.get('code')}: {error.get('message')}"
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                post.reason = f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
            post.done = time.monotonic()
            self.posts.append(post)
            next_at = max(next_at + self.interval, time.monotonic())
            self.stopping.wait(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn.close()
