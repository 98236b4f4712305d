"""Riding out a Redis outage inside redis-py: a retry policy bounded by time, not by a count.

Plain ``rq worker -c consumer.settings`` runs RQ's own worker classes, which end their loop on the
first connection error outside the blocking pop: a failover that happens while a job runs
(the forking worker's monitor reads the job's status while the Sentinels still name the dead
master) or a Redis restart kills them. RQ builds its client from the settings module, and a
redis-py client retries what its connections' :class:`redis.retry.Retry` policy says; so the
settings module hands RQ :class:`RideOutRetry`: every command and every connect that meets a
connection error, a timeout, ``READONLY`` (a demoted master) or ``OOM`` (``maxmemory``
reached under ``noeviction``, nothing written) is tried again with a backoff, for up to
``WORKER_MASTER_TIMEOUT`` seconds of one outage. Past that the command raises
:class:`RedisGaveUpError`, which is not a ``ConnectionError``: RQ's loop does not retry it, the
worker logs it and exits (status 1), for its supervisor to restart.

The policy is shared by every connection of the process (redis-py deep-copies retry objects;
this one copies to itself): once a call gave up, the process's last calls (registering the
worker's death) fail at once instead of waiting a second horizon, until one gets through.
A connect retried inside a command happens before that command's own first failure, so the
two waits do not add up.

Retrying a command whose reply was lost may run it twice (redis-py's own default retries
share this); RQ's writes are idempotent or harmless when repeated (statuses, registry
entries, counters), and the member job is idempotent per job id.

The standalone case needs one more step: RQ builds that client with ``Redis.from_url(REDIS_URL)``
and no options at all, so :func:`give_url_options` registers options for that one URL.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from shared.backoff import Backoff

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: What a rider waits out: no server, a server that stopped answering, a demoted master, a full one.
RIDE_OUT_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    socket.timeout,
    ReadOnlyError,
    OutOfMemoryError,
)

#: Backoff between tries: doubles from 50 ms to a second.
BACKOFF = Backoff(first=0.05, cap=1.0)


class RedisGaveUpError(RedisError):
    """Redis stayed unusable for longer than the ride-out horizon; the process should exit."""


class RideOutRetry(Retry):
    """A redis-py retry policy that keeps trying a call for ``horizon`` seconds."""

    def __init__(self, horizon: float, setting: str = "WORKER_MASTER_TIMEOUT") -> None:
        super().__init__(NoBackoff(), 1_000_000, supported_errors=RIDE_OUT_ERRORS)
        self.horizon = float(horizon)
        #: The setting that sets ``horizon``, named in the give-up message.
        self.setting = setting
        #: A call gave up and no call has got through since: fail at once.
        self._gave_up = False
        #: How long the call that gave up had waited.
        self._gave_up_after = 0.0
        #: The outage was logged (so will be its end).
        self._reported_at: float | None = None

    def __deepcopy__(self, _memo: dict[int, Any]) -> RideOutRetry:
        # redis-py deep-copies the policy into every client and connection: keep one state.
        return self

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """Call ``do`` until it returns, waiting out the errors above for up to the horizon."""
        failures = 0
        waits = BACKOFF.start()
        first_failure = 0.0
        while True:
            try:
                result = do()
            except self._supported_errors as error:
                if is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                if with_failure_count:
                    fail(error, failures)
                else:
                    fail(error)
                now = time.monotonic()
                if failures == 1:
                    first_failure = now
                waited = now - first_failure
                if self._gave_up or waited >= self.horizon:
                    self._give_up(error, waited)
                if failures == 1:
                    # A stale pooled connection (the server restarted, the master moved) needs
                    # one reconnect, at once and without a word.
                    continue
                if self._reported_at is None:
                    self._reported_at = first_failure
                    logger.warning(
                        "Redis unavailable (%s: %s); retrying for up to %.0fs (%s)",
                        type(error).__name__,
                        error,
                        self.horizon,
                        self.setting,
                    )
                time.sleep(min(waits.next_delay(), self.horizon - waited))
                continue
            if failures or self._gave_up:
                self._recovered()
            return result

    def _recovered(self) -> None:
        """A call got through after failing (or after the process gave up): Redis is back."""
        self._gave_up = False
        reported, self._reported_at = self._reported_at, None
        if reported is not None:
            logger.warning("Redis answers again after %.1fs", time.monotonic() - reported)

    def _give_up(self, error: Exception, waited: float) -> None:
        last = f"last error: {type(error).__name__}: {error}"
        if self._gave_up:
            raise RedisGaveUpError(
                f"Redis still unavailable; gave up after {self._gave_up_after:.1f}s "
                f"({self.setting}={self.horizon:g}s; {last})"
            ) from error
        self._gave_up = True
        self._gave_up_after = waited
        message = f"Redis unavailable for {waited:.1f}s, longer than {self.setting}={self.horizon:g}s"
        logger.error("%s; giving up (%s)", message, last)
        raise RedisGaveUpError(f"{message} ({last})") from error


def quick_retry() -> Retry:
    """The project's default policy: one quick reconnect inside redis-py; longer waits are the caller's."""
    from redis.backoff import ExponentialBackoff

    return Retry(ExponentialBackoff(cap=0.2, base=0.02), 1)


def ride_out(conn: Redis, retry: Retry) -> None:
    """Give ``conn``'s pool (its current and future connections) the policy ``retry``."""
    conn.connection_pool.set_retry(retry)


_url_options: dict[str, dict[str, Any]] = {}
_from_url_lock = threading.Lock()
_original_from_url: Any = None


def give_url_options(url: str, options: dict[str, Any]) -> None:
    """Let ``Redis.from_url(url)`` called without options build its client with ``options``.

    RQ's CLI builds the client of a settings module's ``REDIS_URL`` with
    ``connection_class.from_url(REDIS_URL)``: no keyword reaches redis-py (only the
    ``SENTINEL`` dict has ``CONNECTION_KWARGS``), and the URL's query string cannot carry a
    retry policy. This wraps ``Redis.from_url`` once per process so that a call for exactly
    ``url`` that passes no options of its own gets ``options``; every other call is untouched.
    """
    global _original_from_url
    with _from_url_lock:
        _url_options[url] = dict(options)
        if _original_from_url is not None:
            return
        original = Redis.from_url.__func__  # type: ignore[attr-defined]
        _original_from_url = original

        def from_url(cls: type[Redis], /, url: str, **kwargs: Any) -> Redis:
            extra = _url_options.get(url)
            if extra is not None and not kwargs:
                kwargs = dict(extra)
            client: Redis = original(cls, url, **kwargs)
            return client

        from_url.__doc__ = original.__doc__
        Redis.from_url = classmethod(from_url)  # type: ignore[assignment,method-assign]
