"""Exceptions raised by the shared package."""

from __future__ import annotations


class ArchiveError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigurationError(ArchiveError):
    """A setting from the environment is missing or malformed."""


class RedisUnavailableError(ArchiveError):
    """No Redis master could be reached (connection refused, timeout, failover in progress)."""


class EvictionPolicyError(ArchiveError):
    """The queue's Redis uses an eviction policy that may delete queued jobs."""
