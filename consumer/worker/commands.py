"""The worker's command listener: ``rq``'s commands (shutdown, kill-horse, stop-job) over pubsub.

RQ runs its listener with redis-py's ``PubSubWorkerThread`` at ``sleep_time=60``; since redis-py
8.2 stopping that thread joins it, and a thread waiting for its first subscription sleeps the
whole minute, so a worker's exit could hang for 60 s. This listener is a thread of its own that
reads with a short timeout and checks a stop event between reads: :meth:`CommandListener.stop`
returns within about :data:`POLL` seconds whatever the redis-py version.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.client import PubSub
from redis.exceptions import RedisError

from shared.backoff import Backoff

logger = logging.getLogger(__name__)

#: Seconds one read of the channel waits: the bound on how long a stop waits for the thread.
POLL = 0.5
#: Waits between reads while Redis is away (redis-py re-subscribes on the new connection).
RECONNECT = Backoff(first=0.1, cap=2.0, jitter=0.2)


class CommandListener:
    """Subscribes to a worker's channel and hands each message to ``handler`` on its own thread."""

    def __init__(self, connection: Redis, channel: str, handler: Callable[[Any], None], name: str) -> None:
        self.connection = connection
        self.channel = channel
        self.handler = handler
        self.name = name
        self._stop = threading.Event()
        self._pubsub: PubSub | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Subscribe (on the calling thread, so a refused subscribe raises there), then listen."""
        self._stop.clear()
        pubsub = self.connection.pubsub()
        try:
            pubsub.subscribe(**{self.channel: self.handler})
        except BaseException:
            pubsub.close()
            raise
        self._pubsub = pubsub
        self._thread = threading.Thread(target=self._listen, name=f"commands-{self.name}", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        outage = RECONNECT.start()
        try:
            while not self._stop.is_set():
                try:
                    pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL)
                    outage.tries = 0
                except (RedisError, OSError) as exc:
                    if self._stop.is_set():
                        return
                    logger.warning("worker %s: command channel unreachable (%s); retrying", self.name, exc)
                    self._stop.wait(outage.next_delay())
                except Exception:
                    # After a stop, whoever owns the client may close its connections under this
                    # read (redis-py then fails in its poller with a TypeError): the read is over.
                    if self._stop.is_set():
                        return
                    raise
        finally:
            # The thread closes what it reads from: a stop never closes a socket under a read.
            try:
                pubsub.close()
            except (RedisError, OSError, TypeError) as exc:
                logger.debug("worker %s: closing the command channel: %s", self.name, exc)

    @property
    def thread(self) -> threading.Thread | None:
        """The listener thread (RQ's workers call theirs ``pubsub_thread``)."""
        return self._thread

    @property
    def pubsub(self) -> PubSub | None:
        """The subscription being read."""
        return self._pubsub

    @property
    def listening(self) -> bool:
        """Whether the listener thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 0.05) -> None:
        """Stop listening: the thread ends (and closes the subscription) within :data:`POLL` seconds.

        Waits at most ``timeout`` for it; an exiting process need not wait at all (a daemon).
        """
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._pubsub = None
