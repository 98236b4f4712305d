"""Goods and their stock: a decrement is read-check-write inside the lock, fenced in the database.

Inside the lock the holder first *claims* the row with its fencing token
(``UPDATE ... SET fence_token = :token WHERE fence_token < :token``) and reads the stock, then
writes the new stock only ``WHERE fence_token = :token``. A holder whose lock expired during a
pause therefore cannot overwrite anything once a newer holder has claimed the row, whether the
newer holder already wrote or has only read: its claim or its write matches no row and raises
:class:`StaleFenceError`, with nothing changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from shared.constants import GOODS_LOCK_PREFIX
from shared.db import goods, goods_stock_change
from shared.exceptions import GoodsNotFoundError, InsufficientStockError, StaleFenceError
from shared.lock import Lease, Redlock

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Goods:
    """One row of ``goods``."""

    goods_id: int
    goods_name: str
    stock: int
    fence_token: int

    def to_json(self) -> dict[str, Any]:
        """The API's representation."""
        return {
            "goods_id": self.goods_id,
            "goods_name": self.goods_name,
            "stock": self.stock,
            "fence_token": self.fence_token,
        }


def _goods(row: Any) -> Goods:
    return Goods(int(row.goods_id), str(row.goods_name), int(row.stock), int(row.fence_token))


def lock_name(goods_id: int) -> str:
    """The lock that guards the stock of ``goods_id``."""
    return f"{GOODS_LOCK_PREFIX}{goods_id}"


def create_goods(engine: Engine, goods_name: str, stock: int) -> Goods:
    """Insert goods with an initial stock."""
    with engine.begin() as conn:
        result = conn.execute(insert(goods).values(goods_name=goods_name, stock=stock, fence_token=0))
        goods_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    return Goods(goods_id, goods_name, stock, 0)


def get_goods(engine: Engine, goods_id: int) -> Goods:
    """The goods ``goods_id``, or :class:`GoodsNotFoundError`."""
    with engine.connect() as conn:
        row = conn.execute(select(goods).where(goods.c.goods_id == goods_id)).first()
    if row is None:
        raise GoodsNotFoundError(f"goods {goods_id} not found")
    return _goods(row)


def recorded_change(engine: Engine, request_id: str) -> Goods | None:
    """The goods as a change recorded under ``request_id`` left them, if it was applied."""
    change = goods_stock_change.c
    stmt = (
        select(change.goods_id, goods.c.goods_name, change.stock_after, change.fence_token)
        .join(goods, goods.c.goods_id == change.goods_id)
        .where(change.request_id == request_id)
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    return Goods(int(row.goods_id), str(row.goods_name), int(row.stock_after), int(row.fence_token))


def apply_decrement(
    engine: Engine,
    goods_id: int,
    quantity: int,
    fence: int,
    *,
    lease: Lease | None = None,
    request_id: str | None = None,
    before_write: Callable[[], None] | None = None,
) -> Goods:
    """Read-check-write of one decrement by the holder of fencing token ``fence``.

    ``before_write`` runs after every check, just before the write: the worst moment for a
    pause (tests stop the process there), when only the fence can still refuse the write.
    """
    claim = (
        update(goods)
        .where(goods.c.goods_id == goods_id, goods.c.fence_token < fence)
        .values(fence_token=fence)
    )
    with engine.begin() as conn:
        claimed = conn.execute(claim).rowcount
        row = conn.execute(select(goods).where(goods.c.goods_id == goods_id)).first()
    if row is None:
        raise GoodsNotFoundError(f"goods {goods_id} not found")
    if claimed != 1:
        raise StaleFenceError(f"goods {goods_id}: fence {fence} is older than {row.fence_token}")
    current = _goods(row)
    if current.stock < quantity:
        raise InsufficientStockError(f"goods {goods_id}: stock {current.stock} is less than {quantity}")
    if lease is not None:
        lease.check()
    if before_write is not None:
        before_write()
    new_stock = current.stock - quantity
    write = (
        update(goods)
        .where(goods.c.goods_id == goods_id, goods.c.fence_token == fence)
        .values(stock=new_stock)
    )
    with engine.begin() as conn:
        if conn.execute(write).rowcount != 1:
            raise StaleFenceError(f"goods {goods_id}: a holder newer than fence {fence} took over")
        if request_id is not None:
            conn.execute(
                insert(goods_stock_change).values(
                    request_id=request_id,
                    goods_id=goods_id,
                    quantity=quantity,
                    stock_after=new_stock,
                    fence_token=fence,
                )
            )
    return Goods(goods_id, current.goods_name, new_stock, fence)


def decrement_stock(
    redlock: Redlock,
    engine: Engine,
    goods_id: int,
    quantity: int,
    *,
    ttl: float = 10.0,
    timeout: float | None = 10.0,
    request_id: str | None = None,
    before_write: Callable[[], None] | None = None,
) -> Goods:
    """Take the goods' lock and decrement its stock by ``quantity``; nothing changes on any error.

    With a ``request_id`` the change is applied once: a repeat returns the goods as the first
    run left them. Raises :class:`GoodsNotFoundError`, :class:`InsufficientStockError`, lock
    errors (no quorum, timeout, lost) and :class:`StaleFenceError`.
    """
    lease = redlock.acquire(lock_name(goods_id), ttl, timeout=timeout)
    try:
        if request_id is not None:
            done = recorded_change(engine, request_id)
            if done is not None:
                return done
        try:
            return apply_decrement(
                engine,
                goods_id,
                quantity,
                lease.fence,
                lease=lease,
                request_id=request_id,
                before_write=before_write,
            )
        except IntegrityError:
            # The same request ran under an older holder whose lock expired mid-way.
            done = recorded_change(engine, request_id) if request_id is not None else None
            if done is None:
                raise
            return done
    finally:
        # A lock that expires after the fenced write committed does not undo the write: the
        # fence already proved no newer holder came in between, so the result stands.
        lease.release()


def decrement_unlocked(engine: Engine, goods_id: int, quantity: int, think: float = 0.0) -> Goods:
    """The same read-check-write with no lock and no fence: loses updates under concurrency."""
    with engine.connect() as conn:
        row = conn.execute(select(goods).where(goods.c.goods_id == goods_id)).first()
    if row is None:
        raise GoodsNotFoundError(f"goods {goods_id} not found")
    current = _goods(row)
    if think:
        time.sleep(think)
    if current.stock < quantity:
        raise InsufficientStockError(f"goods {goods_id}: stock {current.stock} is less than {quantity}")
    with engine.begin() as conn:
        conn.execute(update(goods).where(goods.c.goods_id == goods_id).values(stock=current.stock - quantity))
    return Goods(goods_id, current.goods_name, current.stock - quantity, current.fence_token)
