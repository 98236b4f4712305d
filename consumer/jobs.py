"""Job functions. Plain importable functions with JSON arguments, run by ``rq worker``."""

from __future__ import annotations

import logging
from typing import Any

from rq import get_current_job
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from shared.db import member, member_json

from .context import get_engine, get_settings
from .dbretry import rides_out_database
from .events import log_active
from .exceptions import InvalidPayloadError

logger = logging.getLogger(__name__)


@rides_out_database
def create_member(payload: dict[str, Any]) -> dict[str, Any]:
    """Insert the member described by ``payload`` once per job id (``createMemberJob``).

    A retry or a re-run of the same job after a crashed worker finds the row it wrote and
    returns it instead of writing a second one. A database it cannot reach makes it try again
    later without spending an attempt (:mod:`consumer.dbretry`).
    """
    job = get_current_job()
    if job is None:
        raise RuntimeError("create_member must run inside an RQ job")
    log_active(job)
    if not isinstance(payload, dict) or not {"name", "age"} <= payload.keys():
        raise InvalidPayloadError(f"member payload needs name and age, got {payload!r}")
    engine = get_engine(get_settings().database_url)
    values = {
        "name": payload["name"],
        "age": payload["age"],
        "email": payload.get("email"),
        "job_id": job.id,
    }
    by_job = select(member).where(member.c.job_id == job.id)
    with engine.connect() as conn:
        existing = conn.execute(by_job).first()
    if existing is not None:
        logger.info("member for job %s already written (member_id=%s)", job.id, existing.member_id)
        return member_json(existing)
    try:
        with engine.begin() as conn:
            conn.execute(insert(member).values(**values))
    except IntegrityError:
        # A concurrent run of the same job won the race; any other constraint error re-raises.
        with engine.connect() as conn:
            existing = conn.execute(by_job).first()
        if existing is None:
            raise
        return member_json(existing)
    with engine.connect() as conn:
        row = conn.execute(by_job).one()
    return member_json(row)
