"""Database tables and engine factory (SQLAlchemy Core; SQLite, PostgreSQL, MySQL/MariaDB)."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    text,
)
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

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


#: PostgreSQL SQLSTATE classes of a server that cannot serve now: connection exceptions (08),
#: transaction rollbacks (40: serialization failures, deadlocks), insufficient resources (53),
#: operator intervention (57: shutdown, starting up, query canceled), system errors (58).
_PG_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
#: ... and lock_not_available (a lock wait timeout).
_PG_TRANSIENT_STATES = frozenset({"55P03"})
#: MySQL/MariaDB server errors of a server that cannot serve now: too many connections, shutdown
#: in progress, lock wait timeout, deadlock, connection killed, read-only (a demoted primary).
_MYSQL_TRANSIENT_CODES = frozenset({1040, 1053, 1205, 1213, 1290, 1836, 1927})
#: SQLite: another writer holds the file, or the file cannot be reached.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "disk i/o error", "unable to open")


def is_transient(exc: BaseException) -> bool:
    """Whether a database error is the server's state, not the job's: worth trying again later.

    Transient: the server is unreachable, restarting, shutting down, failing over or dropped
    the connection; the pool had no connection to give; a lock wait timed out or a deadlock
    was broken. Not transient: constraint violations, bad data, a wrong schema or query (the
    job's own errors), which drivers partly report as ``OperationalError`` too, so the driver's
    error code decides.
    """
    if isinstance(exc, PoolTimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    if orig is None:
        return True
    module = type(orig).__module__
    if module.startswith("psycopg"):
        state = getattr(orig, "sqlstate", None)
        # No SQLSTATE: the client could not talk to a server at all (refused, reset, timed out).
        return state is None or state[:2] in _PG_TRANSIENT_CLASSES or state in _PG_TRANSIENT_STATES
    if module.startswith("pymysql"):
        code = orig.args[0] if orig.args and isinstance(orig.args[0], int) else 0
        # 2000-2999 are the client's own errors: cannot connect, server gone away, lost connection.
        return 2000 <= code < 3000 or code in _MYSQL_TRANSIENT_CODES
    if module.startswith("sqlite3"):
        return any(text in str(orig).lower() for text in _SQLITE_TRANSIENT)
    return True


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

    Processes starting together (server processes, rq workers, the monitor) would race to create
    them: whoever loses sees "already exists" (PostgreSQL: a duplicate pg_type row), and with
    three tables and a dozen processes a few retries are not enough. So creation runs under one
    lock per database (a file lock beside a SQLite file, an advisory lock on PostgreSQL, GET_LOCK
    on MySQL/MariaDB); the retry stays for a lock that could not be taken.
    """
    for attempt in range(1, attempts + 1):
        try:
            with _creation_lock(engine) as bind:
                metadata.create_all(bind)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            if attempt == attempts:
                raise
            logger.debug("concurrent table creation (%s); checking again", exc.orig)


_LOCK_NAME = "redis_archive_init_db"


@contextmanager
def _creation_lock(engine: Engine) -> Iterator[Engine | Connection]:
    """Hold a lock only one process per database has while it creates the tables."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            yield engine
            return
        with open(f"{database}.init-lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield engine
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if dialect == "postgresql":
        with engine.begin() as conn:
            # Held until this transaction ends, the tables' creation included.
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": _LOCK_NAME})
            yield conn
        return
    if dialect in ("mysql", "mariadb"):
        with engine.connect() as conn:
            conn.execute(text("SELECT GET_LOCK(:name, 60)"), {"name": _LOCK_NAME})
            try:
                yield conn
                conn.commit()
            finally:
                conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _LOCK_NAME})
        return
    yield engine
