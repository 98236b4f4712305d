"""The distributed lock (Redlock with fencing tokens) and the goods stock it protects.

``shared.lock.Redlock`` is the lock; :mod:`shared.lock.stock` the fenced stock writes;
:mod:`shared.lock.demo` the side-by-side load of ``redis-archive lock demo``.
"""

from shared.lock.redlock import Lease, Redlock

__all__ = ["Lease", "Redlock"]
