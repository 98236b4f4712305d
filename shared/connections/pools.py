"""Connections of their own to a client's server: for probes whose buffers must be known."""

from __future__ import annotations

from redis import Connection, ConnectionPool, Redis, SSLConnection


def own_pool(conn: Redis, db: int | None = None, max_connections: int | None = None) -> ConnectionPool:
    """A new pool to ``conn``'s server (the current master, under Sentinel), optionally on ``db``."""
    pool = conn.connection_pool
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "connection_pool"}
    connection_class = pool.connection_class
    master = getattr(pool, "get_master_address", None)
    if master is not None:
        # A Sentinel pool: connect straight to the master it names now.
        kwargs["host"], kwargs["port"] = master()
        connection_class = SSLConnection if issubclass(connection_class, SSLConnection) else Connection
    if db is not None:
        kwargs["db"] = db
    return ConnectionPool(connection_class=connection_class, max_connections=max_connections, **kwargs)


def dedicated(conn: Redis) -> Redis:
    """A client on a new connection of its own to ``conn``'s server and database (close it when done).

    A fresh connection has a known history: its buffers are in the state the model expects,
    not shaped by whatever replies a pooled connection carried before.
    """
    return Redis(connection_pool=own_pool(conn, max_connections=1), single_connection_client=True)
