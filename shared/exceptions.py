"""Exceptions raised by the shared package."""

from __future__ import annotations


class ArchiveError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigurationError(ArchiveError):
    """A setting from the environment is missing or malformed."""


class EvictionPolicyError(ArchiveError):
    """The queue's Redis uses an eviction policy that may delete queued jobs."""


class LockError(ArchiveError):
    """Base class of distributed-lock errors."""


class LockUnavailableError(LockError):
    """Fewer than a majority of the lock's Redis nodes answered: no quorum, nothing was done."""


class LockTimeoutError(LockError):
    """The lock stayed held by someone else for the whole wait."""


class LockLostError(LockError):
    """The lock expired or could not be extended on a majority while it was held."""


class StaleFenceError(LockError):
    """A write carried a fencing token older than one already applied; it was rejected."""


class GoodsNotFoundError(ArchiveError):
    """No goods with that id."""


class InsufficientStockError(ArchiveError):
    """The stock is lower than the quantity asked for; nothing was changed."""
