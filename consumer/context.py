"""Per-process resources of a worker: settings and the database engine, built once."""

from __future__ import annotations

import functools
import logging

from sqlalchemy import Engine

from shared.db import init_db, make_engine
from shared.settings import Settings

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this worker process, read from the environment once."""
    return Settings.from_env()


_engines: dict[str, Engine] = {}


def get_engine(url: str) -> Engine:
    """One engine per database URL per process, with the tables created."""
    engine = _engines.get(url)
    if engine is not None:
        return engine
    engine = make_engine(url)
    init_db(engine)
    _engines[url] = engine
    return engine


def dispose_engines() -> None:
    """Close every engine's pooled connections (tests call it between tests)."""
    while _engines:
        _, engine = _engines.popitem()
        engine.dispose()
