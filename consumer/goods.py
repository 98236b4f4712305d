"""The goods jobs: ``decrementStockJob``, the queued stock decrement, under the same lock as the HTTP one."""

from __future__ import annotations

import logging
from typing import Any

from rq import get_current_job

from shared.exceptions import InsufficientStockError
from shared.goods import decrement_stock as locked_decrement
from shared.goods import get_goods
from shared.lock import Redlock

from .context import get_engine, get_settings
from .dbretry import rides_out_database
from .events import log_active
from .exceptions import InvalidPayloadError

logger = logging.getLogger(__name__)

_redlocks: dict[tuple[str, ...], Redlock] = {}


def get_redlock() -> Redlock:
    """This worker's lock over ``LOCK_REDIS_URLS``, built once per process."""
    settings = get_settings()
    redlock = _redlocks.get(settings.lock_urls)
    if redlock is None:
        redlock = Redlock.from_settings(settings)
        _redlocks[settings.lock_urls] = redlock
    return redlock


def close_redlocks() -> None:
    """Disconnect every lock built by this process (tests call it between tests)."""
    while _redlocks:
        _, redlock = _redlocks.popitem()
        redlock.close()


@rides_out_database
def decrement_stock(goods_id: int, quantity: int) -> dict[str, Any]:
    """Take ``quantity`` units of goods ``goods_id`` under its lock, once per job id.

    A stock that is too low is an answer, not a failure: the result says ``applied: false``.
    Lock errors (no quorum, busy, lost) raise, so RQ retries the job; a retry of a job whose
    change was already applied returns that change instead of applying it again. A database
    it cannot reach makes it try again later without spending an attempt (:mod:`consumer.dbretry`).
    """
    job = get_current_job()
    if job is None:
        raise RuntimeError("decrement_stock must run inside an RQ job")
    log_active(job)
    valid = isinstance(goods_id, int) and isinstance(quantity, int) and not isinstance(quantity, bool)
    if not valid or quantity < 1:
        raise InvalidPayloadError(f"need goods_id and quantity >= 1, got {goods_id!r}, {quantity!r}")
    engine = get_engine(get_settings().database_url)
    redlock = get_redlock()
    # Lock statistics go to the queue's Redis: the worker's own connection.
    redlock.stats = job.connection
    try:
        goods = locked_decrement(redlock, engine, goods_id, quantity, request_id=job.id)
    except InsufficientStockError as exc:
        logger.info("job %s: %s", job.id, exc)
        current = get_goods(engine, goods_id)
        return {**current.to_json(), "applied": False, "reason": str(exc)}
    return {**goods.to_json(), "applied": True}
