"""A contended goods stock decrement across processes, with and without the lock (demo and tests)."""

from __future__ import annotations

import logging
import multiprocessing
import queue
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.db import init_db, make_engine
from shared.exceptions import InsufficientStockError, LockError
from shared.goods import create_goods, decrement_stock, decrement_unlocked, get_goods
from shared.lock import Redlock

logger = logging.getLogger(__name__)


@dataclass
class LoadResult:
    """What a run did to one goods row."""

    mode: str
    processes: int
    attempts: int
    initial: int
    final: int = 0
    successes: int = 0
    #: Attempts refused because the stock was too low (nothing changed).
    refused: int = 0
    #: Lock errors by class name (no quorum, timeout, stale fence): nothing changed.
    errors: Counter[str] = field(default_factory=Counter)
    #: One message per error class, to show what the caller was told.
    messages: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def sold(self) -> int:
        """Units that really left the stock."""
        return self.initial - self.final

    @property
    def oversold(self) -> int:
        """Successful decrements beyond the initial stock."""
        return max(0, self.successes - self.initial)

    @property
    def lost_updates(self) -> int:
        """Successful decrements that the stock does not show."""
        return self.successes - self.sold

    def to_json(self) -> dict[str, Any]:
        """Every figure, for ``--json``."""
        return {
            "mode": self.mode,
            "processes": self.processes,
            "attempts": self.attempts,
            "initial": self.initial,
            "final": self.final,
            "successes": self.successes,
            "refused": self.refused,
            "errors": dict(self.errors),
            "oversold": self.oversold,
            "lost_updates": self.lost_updates,
            "seconds": round(self.seconds, 3),
        }


def _worker(
    database_url: str,
    lock_urls: Sequence[str] | None,
    goods_id: int,
    attempts: int,
    think: float,
    ttl: float,
    start: Any,
    progress: Any,
    results: Any,
) -> None:
    """One contending process: ``attempts`` decrements of 1, counted by outcome."""
    engine = make_engine(database_url)
    redlock = Redlock(lock_urls) if lock_urls else None
    counts: Counter[str] = Counter()
    messages: dict[str, str] = {}

    def pause() -> None:
        if think:
            time.sleep(think)

    try:
        start.wait(timeout=120)
        for _ in range(attempts):
            try:
                if redlock is None:
                    decrement_unlocked(engine, goods_id, 1, think)
                else:
                    decrement_stock(redlock, engine, goods_id, 1, ttl=ttl, timeout=30, before_write=pause)
                counts["success"] += 1
            except InsufficientStockError:
                counts["refused"] += 1
            except LockError as exc:
                counts["error:" + type(exc).__name__] += 1
                messages.setdefault(type(exc).__name__, str(exc))
            with progress.get_lock():
                progress.value += 1
    except Exception as exc:  # noqa: BLE001 - a crashed worker is reported in the result, not hidden
        counts["error:" + type(exc).__name__] += 1
        messages.setdefault(type(exc).__name__, f"worker crashed: {exc}")
    finally:
        results.put((dict(counts), messages))
        if redlock is not None:
            redlock.close()
        engine.dispose()


def _collect(results: Any, workers: Sequence[Any]) -> list[tuple[dict[str, int], dict[str, str]]]:
    """Every worker's counts; a worker that died without reporting counts as one error."""
    collected: list[tuple[dict[str, int], dict[str, str]]] = []
    while len(collected) < len(workers):
        try:
            collected.append(results.get(timeout=0.5))
        except queue.Empty:
            if not any(proc.is_alive() for proc in workers):
                try:
                    collected.append(results.get(timeout=1))
                except queue.Empty:
                    missing = len(workers) - len(collected)
                    died = ({"error:WorkerDied": 1}, {"WorkerDied": "a worker exited without reporting"})
                    collected += [died] * missing
    return collected


def run_load(
    database_url: str,
    lock_urls: Sequence[str] | None,
    *,
    processes: int = 4,
    attempts: int = 250,
    stock: int = 1000,
    think: float = 0.0,
    ttl: float = 5.0,
    goods_name: str = "demo",
    midway: Callable[[], None] | None = None,
) -> LoadResult:
    """Create goods with ``stock``; ``processes`` processes each try ``attempts`` decrements of 1.

    ``lock_urls=None`` runs without the lock. ``midway`` runs in this process once half the
    attempts are done (tests kill a node there).
    """
    engine = make_engine(database_url)
    try:
        init_db(engine)
        goods_id = create_goods(engine, goods_name, stock).goods_id
        ctx = multiprocessing.get_context("spawn")
        start = ctx.Barrier(processes + 1)
        progress = ctx.Value("i", 0)
        results = ctx.Queue()
        workers = [
            ctx.Process(
                target=_worker,
                args=(database_url, lock_urls, goods_id, attempts, think, ttl, start, progress, results),
                daemon=True,
            )
            for _ in range(processes)
        ]
        for proc in workers:
            proc.start()
        start.wait(timeout=120)
        began = time.monotonic()
        total = processes * attempts
        if midway is not None:
            while progress.value < total // 2 and any(p.is_alive() for p in workers):
                time.sleep(0.01)
            midway()
        outcome = LoadResult("lock" if lock_urls else "no lock", processes, total, stock)
        for counts, messages in _collect(results, workers):
            outcome.successes += counts.pop("success", 0)
            outcome.refused += counts.pop("refused", 0)
            outcome.errors.update({k.removeprefix("error:"): v for k, v in counts.items()})
            for name, text in messages.items():
                outcome.messages.setdefault(name, text)
        for proc in workers:
            proc.join(30)
        outcome.seconds = time.monotonic() - began
        results.close()
        results.join_thread()
        outcome.final = get_goods(engine, goods_id).stock
        return outcome
    finally:
        engine.dispose()
