"""Goods and their stock: create, read, decrement under the distributed lock, or enqueue it."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from flask import Blueprint
from pydantic import BaseModel, Field, field_validator

from shared.constants import DECREMENT_STOCK_JOB, DECREMENT_STOCK_JOB_NAME, GOODS_QUEUE
from shared.exceptions import (
    GoodsNotFoundError,
    InsufficientStockError,
    LockLostError,
    LockTimeoutError,
    LockUnavailableError,
    StaleFenceError,
)
from shared.goods import create_goods, decrement_stock, get_goods

from .enqueue import enqueue
from .exceptions import BackendUnavailable, ResourceConflict, ResourceNotFound
from .openapi import operation
from .schemas import JobAccepted, Strict, no_control_chars
from .state import ArchiveState, get_state

logger = logging.getLogger(__name__)

bp = Blueprint("goods", __name__)


class GoodsIn(Strict):
    """Goods to create."""

    goods_name: Annotated[str, Field(min_length=1, max_length=200)]
    stock: Annotated[int, Field(ge=0, le=2**31 - 1)]

    _check_name = field_validator("goods_name")(no_control_chars)


class StockChange(Strict):
    """How many units to take from the stock."""

    stock: Annotated[int, Field(ge=1, le=2**31 - 1)]


class GoodsOut(BaseModel):
    """Goods and their current stock."""

    goods_id: int
    goods_name: str
    stock: int
    fence_token: int


def _existing(state: ArchiveState, goods_id: int) -> dict[str, Any]:
    try:
        return get_goods(state.engine, goods_id).to_json()
    except GoodsNotFoundError as exc:
        raise ResourceNotFound(str(exc)) from None


@bp.post("/goods")
@operation("Create goods with an initial stock", body=GoodsIn, responses={201: GoodsOut}, tags=("goods",))
def create(body: GoodsIn) -> tuple[dict[str, Any], int]:
    return create_goods(get_state().engine, body.goods_name, body.stock).to_json(), 201


@bp.get("/goods/<int(max=2147483647):goods_id>")
@operation("Goods and their stock", responses={200: GoodsOut, 404: None}, tags=("goods",))
def read(goods_id: int) -> dict[str, Any]:
    return _existing(get_state(), goods_id)


@bp.patch("/goods/<int(max=2147483647):goods_id>/stocks")
@operation(
    "Take units from the stock under the distributed lock",
    body=StockChange,
    responses={
        200: GoodsOut,
        404: None,
        409: "The stock is lower than asked for; nothing changed",
        503: "No majority of lock nodes, or the lock stayed busy or was lost; nothing changed",
    },
    tags=("goods",),
)
def decrement(goods_id: int, body: StockChange) -> dict[str, Any]:
    state = get_state()
    retry = {"Retry-After": "1"}
    try:
        goods = decrement_stock(state.redlock(), state.engine, goods_id, body.stock)
    except GoodsNotFoundError as exc:
        raise ResourceNotFound(str(exc)) from None
    except InsufficientStockError as exc:
        raise ResourceConflict(str(exc), code="insufficient_stock") from None
    except LockUnavailableError as exc:
        raise BackendUnavailable(str(exc), code="lock_unavailable", headers=retry) from None
    except LockTimeoutError as exc:
        raise BackendUnavailable(str(exc), code="lock_busy", headers=retry) from None
    except (LockLostError, StaleFenceError) as exc:
        raise BackendUnavailable(str(exc), code="lock_lost", headers=retry) from None
    return goods.to_json()


@bp.post("/queue/goods/<int(max=2147483647):goods_id>/stocks")
@operation(
    "Enqueue the same decrement on queue goods; workers contend for the same lock",
    body=StockChange,
    responses={202: JobAccepted, 404: None, 503: None},
    tags=("goods",),
)
def enqueue_decrement(goods_id: int, body: StockChange) -> tuple[dict[str, Any], int]:
    state = get_state()
    _existing(state, goods_id)
    job_id = enqueue(state, GOODS_QUEUE, DECREMENT_STOCK_JOB, DECREMENT_STOCK_JOB_NAME, goods_id, body.stock)
    return {"jobId": job_id}, 202
