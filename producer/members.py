"""``POST /queue/members`` (enqueue ``createMemberJob``) and reading what the consumer wrote."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response
from sqlalchemy import select

from shared.constants import CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, MEMBER_QUEUE
from shared.db import member, member_json

from .enqueue import enqueue, enqueue_many
from .exceptions import ResourceNotFound
from .openapi import operation
from .schemas import (
    BULK_MAX_MEMBERS,
    JobAccepted,
    JobsAccepted,
    Member,
    MemberBulkIn,
    MemberIn,
    MemberList,
    MemberQuery,
    RoutingQuery,
)
from .state import ArchiveState, get_state

bp = Blueprint("members", __name__)

#: Body limit of the bulk endpoint: room for its most members at their longest.
BULK_MAX_BODY_BYTES = BULK_MAX_MEMBERS * 512


def _bulk_body_limit() -> int:
    return max(get_state().settings.max_body_bytes, BULK_MAX_BODY_BYTES)


@bp.post("/queue/members")
@operation(
    "Enqueue createMemberJob on queue member",
    body=MemberIn,
    query=RoutingQuery,
    responses={202: JobAccepted, 503: None},
    tags=("members",),
)
def enqueue_member(body: MemberIn, query: RoutingQuery) -> Response:
    return Response(accept_member(get_state(), body, query), 202, mimetype="application/json")


def accept_member(state: ArchiveState, body: MemberIn, query: RoutingQuery) -> bytes:
    """Enqueue the member's job; the 202's body. Also the endpoint's direct view (:mod:`producer.direct`)."""
    job_id = enqueue(
        state,
        MEMBER_QUEUE,
        CREATE_MEMBER_JOB,
        CREATE_MEMBER_JOB_NAME,
        body.model_dump(mode="json"),
        routing_key=query.routing_key,
    )
    # The body jsonify would write ({"jobId":"..."} and a newline): a job id is a UUID, nothing
    # to escape, and the JSON provider's round costs about 4 us of a request's CPU.
    return f'{{"jobId":"{job_id}"}}\n'.encode()


@bp.post("/queue/members/bulk")
@operation(
    f"Enqueue createMemberJob for up to {BULK_MAX_MEMBERS} members at once, all or none",
    body=MemberBulkIn,
    query=RoutingQuery,
    responses={202: JobsAccepted, 503: None},
    tags=("members",),
    # The view's own limit, not a blueprint hook: a hook runs on every request of the blueprint.
    max_body=_bulk_body_limit,
    description="All members of one request go to one namespace of the queue (on a Redis Cluster), "
    "so the request is all or none.",
)
def enqueue_members_bulk(body: MemberBulkIn, query: RoutingQuery) -> tuple[dict[str, Any], int]:
    payloads = [(member_in.model_dump(mode="json"),) for member_in in body.members]
    job_ids = enqueue_many(
        get_state(), MEMBER_QUEUE, CREATE_MEMBER_JOB, CREATE_MEMBER_JOB_NAME, payloads, query.routing_key
    )
    return {"jobIds": job_ids}, 202


# Bounded like the column (32-bit on PostgreSQL and MySQL): a larger id is a 404, not a database error.
@bp.get("/members/<int(max=2147483647):member_id>")
@operation(
    "A member written by the consumer", responses={200: Member, 404: None, 503: None}, tags=("members",)
)
def get_member(member_id: int) -> dict[str, Any]:
    with get_state().engine.connect() as conn:
        row = conn.execute(select(member).where(member.c.member_id == member_id)).first()
    if row is None:
        raise ResourceNotFound(f"member {member_id} not found")
    return member_json(row)


@bp.get("/members")
@operation(
    "Members, filtered by job id, paged by member id",
    query=MemberQuery,
    responses={200: MemberList, 503: None},
    tags=("members",),
)
def list_members(query: MemberQuery) -> dict[str, Any]:
    stmt = select(member).where(member.c.member_id > query.after_id)
    if query.job_id is not None:
        stmt = stmt.where(member.c.job_id == query.job_id)
    stmt = stmt.order_by(member.c.member_id).limit(query.limit)
    with get_state().engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return {"members": [member_json(row) for row in rows]}
