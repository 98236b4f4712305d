"""Database tables and engine factory (SQLAlchemy Core; SQLite, PostgreSQL, MySQL/MariaDB)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

logger = logging.getLogger(__name__)

metadata = MetaData()

member = Table(
    "member",
    metadata,
    Column("member_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("age", Integer, nullable=False),
    Column("email", String(320), nullable=True),
    # The RQ job id: a retried or re-run job finds its row instead of writing a second one.
    Column("job_id", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

goods = Table(
    "goods",
    metadata,
    Column("goods_id", Integer, primary_key=True, autoincrement=True),
    Column("goods_name", String(200), nullable=False),
    Column("stock", Integer, nullable=False),
    # Highest fencing token that changed this row; older holders' writes are refused.
    Column("fence_token", BigInteger, nullable=False, default=0),
)

goods_stock_change = Table(
    "goods_stock_change",
    metadata,
    Column("change_id", Integer, primary_key=True, autoincrement=True),
    # The queued job's id: a retried or re-run decrement finds its change instead of applying twice.
    Column("request_id", String(64), nullable=False, unique=True),
    Column("goods_id", Integer, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("stock_after", Integer, nullable=False),
    Column("fence_token", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


def member_json(row: Any) -> dict[str, Any]:
    """A ``member`` row as JSON: its columns, ``created_at`` in ISO 8601."""
    data = dict(row._mapping)
    created = data.get("created_at")
    data["created_at"] = created.isoformat() if created is not None else None
    return data


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` with settings fit for many processes writing at once."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            # WAL lets the producer read while workers write; busy_timeout waits out locks.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def init_db(engine: Engine, attempts: int = 3) -> None:
    """Create the tables that do not exist yet.

    Processes starting together (gunicorn workers, rq workers) race to create them: whoever
    loses sees "already exists" (PostgreSQL: a duplicate pg_type row) and looks again.
    """
    for attempt in range(1, attempts + 1):
        try:
            metadata.create_all(engine)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            if attempt == attempts:
                raise
            logger.debug("concurrent table creation (%s); checking again", exc.orig)
