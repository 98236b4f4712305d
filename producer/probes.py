"""``POST /probes/<kind>``: enqueue a memory probe on queue ``probe``; the result is the job's result."""

from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint
from pydantic import Field, model_validator

from shared.constants import PROBE_JOBS, PROBE_QUEUE

from .enqueue import enqueue
from .openapi import operation
from .schemas import JobAccepted, Strict
from .state import get_state

bp = Blueprint("probes", __name__)


# Limits keep every valid body, even with every character JSON-escaped, under MAX_BODY_BYTES.
KeyName = Annotated[str, Field(min_length=1, max_length=256)]


class KeyValue(Strict):
    """A key and value to write into the scratch database."""

    key: KeyName
    value: Annotated[str, Field(max_length=512)]


class KeyProbeIn(Strict):
    """Explain existing keys and/or key/value pairs written into a scratch database."""

    keys: Annotated[list[KeyName], Field(max_length=8)] = []
    set: Annotated[list[KeyValue], Field(max_length=8)] = []
    ttl: Annotated[int, Field(ge=1)] | None = None
    scratch_db: Annotated[int, Field(ge=0, le=15)] = 15

    @model_validator(mode="after")
    def _keys_or_values_given(self) -> KeyProbeIn:
        if not self.keys and not self.set:
            raise ValueError("give keys or set")
        return self


class SweepProbeIn(Strict):
    """Key or value lengths from start to stop."""

    what: str = Field("key", pattern="^(key|value)$")
    start: Annotated[int, Field(ge=1, le=4096)] = 1
    stop: Annotated[int, Field(ge=1, le=4096)] = 64
    scratch_db: Annotated[int, Field(ge=0, le=15)] = 15

    @model_validator(mode="after")
    def _start_not_after_stop(self) -> SweepProbeIn:
        if self.start > self.stop:
            raise ValueError("start must not exceed stop")
        return self


class CapacityProbeIn(Strict):
    """Predict how many keys of a pattern still fit in the queue's Redis."""

    key_pattern: Annotated[str, Field(min_length=4, max_length=256, pattern=r"^[^{}]*\{i\}[^{}]*$")]
    value: Annotated[str, Field(max_length=4096)]
    ttl: Annotated[int, Field(ge=1)] | None = None
    maxmemory: Annotated[int, Field(ge=1)] | None = None
    batch: Annotated[int, Field(ge=1, le=100)] | None = None


class WatchProbeIn(Strict):
    """Samples of INFO memory with warnings."""

    interval: Annotated[float, Field(ge=0.1, le=60)] = 1.0
    count: Annotated[int, Field(ge=1, le=60)] = 1


def _enqueue(kind: str, body: Strict) -> tuple[dict[str, Any], int]:
    # By dotted path: the producer never imports job code.
    params = body.model_dump(mode="json")
    job_id = enqueue(get_state(), PROBE_QUEUE, PROBE_JOBS[kind], f"probe-{kind}", params)
    return {"jobId": job_id}, 202


_RESPONSES: dict[int, Any] = {202: JobAccepted, 503: None}


@bp.post("/probes/key")
@operation(
    "Enqueue a key probe (MEMORY USAGE explained)", body=KeyProbeIn, responses=_RESPONSES, tags=("probes",)
)
def probe_key(body: KeyProbeIn) -> tuple[dict[str, Any], int]:
    return _enqueue("key", body)


@bp.post("/probes/sweep")
@operation("Enqueue a key/value length sweep", body=SweepProbeIn, responses=_RESPONSES, tags=("probes",))
def probe_sweep(body: SweepProbeIn) -> tuple[dict[str, Any], int]:
    return _enqueue("sweep", body)


@bp.post("/probes/capacity")
@operation("Enqueue a capacity prediction", body=CapacityProbeIn, responses=_RESPONSES, tags=("probes",))
def probe_capacity(body: CapacityProbeIn) -> tuple[dict[str, Any], int]:
    return _enqueue("capacity", body)


@bp.post("/probes/watch")
@operation("Enqueue memory samples", body=WatchProbeIn, responses=_RESPONSES, tags=("probes",))
def probe_watch(body: WatchProbeIn) -> tuple[dict[str, Any], int]:
    return _enqueue("watch", body)
