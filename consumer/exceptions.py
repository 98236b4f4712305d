"""Exceptions raised by job functions."""

from __future__ import annotations


class ConsumerError(Exception):
    """Base class of job errors that RQ records as failures."""


class InvalidPayloadError(ConsumerError):
    """A job was enqueued with arguments that do not describe a valid record."""
