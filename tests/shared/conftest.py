"""Fixtures of the shared package's tests: the distributed lock's nodes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import RedisProc, redis_servers


@pytest.fixture(scope="module")
def lock_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisProc]]:
    """Three private redis-servers, the independent masters of a Redlock, for one test module."""
    with redis_servers(tmp_path_factory.mktemp("lock-nodes"), 3) as servers:
        yield servers


@pytest.fixture
def lock_urls(lock_nodes: list[RedisProc]) -> list[str]:
    """The lock nodes' URLs, each node running (restarted if a test killed it) and flushed."""
    for node in lock_nodes:
        if not node.alive():
            node.restart()
        client = node.client()
        client.flushall()
        client.close()
    return [node.url for node in lock_nodes]
