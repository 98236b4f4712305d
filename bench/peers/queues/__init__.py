"""What each peer's worker and producer import (run inside that peer's environment).

Every module defines two jobs, ``noop`` and ``io`` (a 10 ms sleep), that stamp their own start and
end with :func:`bench.peers.stamps.stamp`, and a ``producer(url)`` (or ``aproducer(url)`` for the
asyncio peers) whose ``send(kind, index)`` enqueues one of them the peer's documented way.
"""
