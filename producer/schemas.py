"""Pydantic models of the HTTP API: they validate requests and generate ``/openapi.json``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from .emails import EmailAddress


class Strict(BaseModel):
    """Base of request models: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class FieldError(BaseModel):
    """One offending field."""

    field: str
    message: str
    type: str | None = None


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str
    message: str
    fields: list[FieldError] | None = None


class ErrorBody(BaseModel):
    """Every error the API answers has this shape."""

    error: ErrorDetail


def _integral(value: Any) -> Any:
    """JSON has one number type: ``3.0`` is the integer 3 (JSON Schema agrees); ``3.5`` is not."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


#: Metadata for an ``int`` field of a JSON body, after its ``Field(...)``: ``3`` or ``3.0`` are
#: accepted, never ``"3"``, ``true`` or ``3.5``.
INTEGRAL = BeforeValidator(_integral)

#: Text that is not blank and holds no control characters, as a JSON Schema pattern.
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\s][^\x00-\x1f\x7f]*$"


def no_control_chars(value: str) -> str:
    """Refuse text that is blank or holds control characters."""
    if not value.strip():
        raise ValueError("must not be blank")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    return value


class MemberIn(Strict):
    """A member to create."""

    name: Annotated[
        str, Field(min_length=1, max_length=100, json_schema_extra={"pattern": PRINTABLE_PATTERN})
    ]
    age: Annotated[int, Field(ge=0, le=150), INTEGRAL]
    email: Annotated[str, EmailAddress] | None = None

    _check_name = field_validator("name")(no_control_chars)


#: Most members one ``POST /queue/members/bulk`` accepts.
BULK_MAX_MEMBERS = 1000


class MemberBulkIn(Strict):
    """Members to create, all or none: one invalid member refuses the whole request."""

    members: Annotated[list[MemberIn], Field(min_length=1, max_length=BULK_MAX_MEMBERS)]


class JobsAccepted(BaseModel):
    """The jobs were written to Redis, in the order of the request's members."""

    jobIds: list[str]


class JobAccepted(BaseModel):
    """The job was written to Redis and will run."""

    jobId: str


JobStatusName = Literal[
    "queued", "started", "finished", "failed", "scheduled", "deferred", "stopped", "canceled", "created"
]


class JobInfo(BaseModel):
    """A job's state."""

    id: str
    name: str
    queue: str
    status: JobStatusName
    createdAt: str | None
    enqueuedAt: str | None
    startedAt: str | None
    endedAt: str | None
    attempts: int
    maxAttempts: int
    result: Any = Field(
        None,
        description="The return value once finished; null before, and for a job not stored as JSON "
        "(enqueued by plain RQ with its default serializer: its status and times are read, its data never)",
    )
    error: str | None = None


class Member(BaseModel):
    """A member as the consumer wrote it."""

    member_id: int
    name: str
    age: int
    email: str | None
    job_id: str
    created_at: str | None


class MemberList(BaseModel):
    """Members, oldest first."""

    members: list[Member]


class MemberQuery(Strict):
    """Filter and page members."""

    job_id: Annotated[str | None, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] = None
    after_id: Annotated[int, Field(ge=0, le=2**31)] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class RoutingQuery(Strict):
    """Where a queue spread over several namespaces puts the job(s)."""

    routing_key: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            description="Jobs with the same key go to the same namespace, so one worker sees them in order; "
            "without it, namespaces take turns. No effect when the queue has one namespace.",
        ),
    ] = None


class Health(BaseModel):
    """Liveness or readiness."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}
