"""The distributed lock: Redlock with fencing tokens.

``shared.lock.Redlock`` is the lock; :mod:`shared.lock.demo` the side-by-side load of
``redis-archive lock demo`` on the goods stock it protects (:mod:`shared.goods`).
"""

from shared.lock.redlock import Lease, Redlock

__all__ = ["Lease", "Redlock"]
