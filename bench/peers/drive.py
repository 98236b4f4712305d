"""The producer side of a run, inside the peer's environment: fill a queue, or trickle into it.

``python -m bench.peers.drive fill MODULE KIND N`` enqueues jobs ``0..N-1`` of ``KIND`` (``noop``
or ``io``) with the producer of ``bench.peers.queues.MODULE``; ``trickle`` first sends warm-up
jobs (negative indices) and waits until the worker has stamped them, then sends one job every
``--interval`` seconds and writes ``index returned_at`` (``time.time()`` right after the enqueue
call returned) to ``--out``. Redis comes from ``BENCH_REDIS_URL``, the stamps file from
``BENCH_STAMPS``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.peers.stamps import STAMPS_ENV, count_lines

URL_ENV = "BENCH_REDIS_URL"
#: The most enqueue calls an asyncio producer keeps in flight while filling.
WINDOW = 50


def _warmed_up(count: int, timeout: float = 60.0) -> None:
    """Wait until the worker has stamped the ``count`` warm-up jobs."""
    stamps = Path(os.environ[STAMPS_ENV])
    deadline = time.monotonic() + timeout
    while count_lines(stamps) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker did not run {count} warm-up jobs within {timeout:.0f} s")
        time.sleep(0.01)
    time.sleep(0.25)


def _write_returns(out: Path, returns: list[tuple[int, float]]) -> None:
    out.write_text("".join(f"{index} {returned:.6f}\n" for index, returned in returns))


def run_sync(module: ModuleType, args: argparse.Namespace) -> None:
    """Fill or trickle with a blocking producer."""
    producer = module.producer(os.environ[URL_ENV])
    try:
        if args.mode == "fill":
            send_many: Callable[[str, range], None] | None = getattr(producer, "send_many", None)
            if send_many is not None:
                send_many(args.kind, range(args.n))
            else:
                for index in range(args.n):
                    producer.send(args.kind, index)
            return
        for index in range(-args.warmup, 0):
            producer.send(args.kind, index)
        _warmed_up(args.warmup)
        returns = []
        start = time.monotonic()
        for index in range(args.n):
            pause = start + index * args.interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            producer.send(args.kind, index)
            returns.append((index, time.time()))
        _write_returns(args.out, returns)
    finally:
        producer.close()


async def run_async(module: ModuleType, args: argparse.Namespace) -> None:
    """Fill or trickle with an asyncio producer."""
    producer: Any = await module.aproducer(os.environ[URL_ENV])
    try:
        if args.mode == "fill":
            for first in range(0, args.n, WINDOW):
                window = range(first, min(args.n, first + WINDOW))
                await asyncio.gather(*(producer.send(args.kind, index) for index in window))
            return
        for index in range(-args.warmup, 0):
            await producer.send(args.kind, index)
        await asyncio.to_thread(_warmed_up, args.warmup)
        returns = []
        start = time.monotonic()
        for index in range(args.n):
            pause = start + index * args.interval - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            await producer.send(args.kind, index)
            returns.append((index, time.time()))
        _write_returns(args.out, returns)
    finally:
        await producer.close()


def main() -> None:
    """Parse the arguments and drive the module's producer."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["fill", "trickle"])
    parser.add_argument("module", help="a module of bench.peers.queues")
    parser.add_argument("kind", choices=["noop", "io"])
    parser.add_argument("n", type=int)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    module = importlib.import_module(f"bench.peers.queues.{args.module}")
    if hasattr(module, "aproducer"):
        asyncio.run(run_async(module, args))
    else:
        run_sync(module, args)


if __name__ == "__main__":
    main()
