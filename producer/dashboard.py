"""rq-dashboard at ``/dashboard``: our Redis client, the JSON serializer, auth and a read-only mode.

rq-dashboard 0.9 predates RQ 3 and the JSON serializer in places: a few of its views fetch
jobs with RQ's default (pickle) serializer, requeue by a GET, or open a new Redis client per
request. Those endpoints are replaced here by versions that use the app's client and
:class:`~rq.serializers.JSONSerializer`; the job listings are checked before the shipped views
run (an unknown registry or a page size of 0 is a 4xx, not an exception in rq-dashboard), and
compacting a queue with no waiting jobs has nothing to do; the rest of the blueprint is used as
shipped. A job another serializer wrote (plain RQ's default, pickle) is listed and shown with
what can be read without unpickling it: its status, times, description and error.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Flask, Response, current_app, make_response, render_template, request, url_for
from redis.exceptions import ResponseError
from rq import Queue, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, validate_job_id
from rq.registry import BaseRegistry
from rq.results import Result
from rq.serializers import JSONSerializer
from rq_dashboard import web as rq_web
from werkzeug.datastructures import Authorization

from shared.connections import describe
from shared.redrive import requeue
from shared.settings import Settings

from .auth import token_matches
from .error_handlers import error_response
from .exceptions import ApiError, ResourceNotFound
from .jobs import UNREADABLE
from .state import get_state

logger = logging.getLogger(__name__)

URL_PREFIX = "/dashboard"
BLUEPRINT = rq_web.blueprint.name
REALM = 'Basic realm="Redis Archive dashboard", charset="UTF-8"'

#: Endpoints that change data: refused in read-only mode, and only by POST.
MUTATING = frozenset(
    f"{BLUEPRINT}.{name}"
    for name in ("delete_job_view", "requeue_job_view", "requeue_all", "empty_queue", "compact_queue")
)

#: What the listings and ``empty`` take as ``registry_name``: the queue itself and its registries.
REGISTRY_NAMES = ("queued", "started", "finished", "failed", "deferred", "scheduled", "canceled")
#: The listings' sort orders (rq-dashboard spells descending ``dsc``).
ORDERS = ("asc", "dsc")
#: Largest page size and page number a listing serves: the page's offset stays a Redis integer.
MAX_PER_PAGE = 1000
MAX_PAGE = 1_000_000_000


def _same(given: str | None, expected: str | None) -> bool:
    """Compare secrets in constant time; an unset secret never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def credentials_ok(header: str | None, auth: Authorization | None, settings: Settings) -> bool:
    """Basic auth as ``DASHBOARD_USER``/``DASHBOARD_PASSWORD``, or the API token (bearer, basic password)."""
    if settings.api_token and token_matches(header, settings.api_token):
        return True
    if auth is None or auth.type != "basic":
        return False
    if _same(auth.password, settings.api_token):
        return True
    return _same(auth.username, settings.dashboard_user) and _same(auth.password, settings.dashboard_password)


def check_access() -> Response | None:
    """``before_request`` of every dashboard page: closed, 401, or let through."""
    settings = get_state().settings
    if not settings.dashboard_password and not settings.api_token:
        return error_response(
            403,
            "dashboard_closed",
            "the dashboard is closed: set DASHBOARD_PASSWORD (or API_TOKEN) to open it",
        )
    if not credentials_ok(request.headers.get("Authorization"), request.authorization, settings):
        return error_response(
            401, "unauthorized", "the dashboard needs credentials", headers={"WWW-Authenticate": REALM}
        )
    return None


def _guard_dashboard() -> Response | None:
    denied = check_access()
    if denied is not None:
        return denied
    instance = (request.view_args or {}).get("instance_number")
    if instance not in (None, 0):
        return error_response(404, "not_found", f"no Redis instance {instance}; this dashboard has one")
    if request.endpoint in MUTATING:
        if get_state().settings.dashboard_read_only:
            return error_response(403, "read_only", "the dashboard is read-only (DASHBOARD_READ_ONLY)")
        if request.method != "POST":
            return error_response(405, "method_not_allowed", "use POST", headers={"Allow": "POST"})
        origin = request.headers.get("Origin")
        if origin and origin.rstrip("/") != request.host_url.rstrip("/"):
            # Browsers resend basic-auth credentials cross-site; refuse other sites' forms.
            return error_response(403, "cross_origin", f"cross-origin request from {origin} refused")
    current_app.redis_conn = get_state().dashboard_redis  # type: ignore[attr-defined]
    return None


def _fetch(job_id: str) -> Job:
    try:
        # RQ refuses ids it could never have made (and reads ``id:execution`` as ``id``).
        validate_job_id(job_id)
    except ValueError:
        raise ResourceNotFound(f"job {job_id!r} not found") from None
    try:
        return Job.fetch(job_id, connection=get_state().dashboard_redis, serializer=JSONSerializer)
    except NoSuchJobError:
        raise ResourceNotFound(f"job {job_id!r} not found") from None


def _json(data: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    return data, 200, {"Cache-Control": "no-store"}


def job_view(instance_number: int, job_id: str) -> Any:
    """The job page (the shipped view fetches the job with pickle, and 500s on unknown ids)."""
    _fetch(job_id)
    response = make_response(
        render_template(
            "rq_dashboard/job.html",
            current_instance=instance_number,
            instance_list=rq_web.escape_format_instance_list(
                current_app.config.get("RQ_DASHBOARD_REDIS_URL")
            ),
            id=job_id,
            rq_url_prefix=url_for(".queues_overview"),
            rq_dashboard_version=rq_web.rq_dashboard_version,
            rq_version=rq_web.rq_version,
            deprecation_options_usage=False,
            enable_delete=not current_app.config.get("RQ_DASHBOARD_DISABLE_DELETE"),
        )
    )
    response.headers.set("Cache-Control", "no-store")
    return response


def delete_job(job_id: str) -> Any:
    """Delete one job and its registry entries."""
    _fetch(job_id).delete()
    return _json({"status": "OK"})


def requeue_one(job_id: str) -> Any:
    """Put a failed (or stopped) job back on its queue, its attempts restored (as the CLI)."""
    job = _fetch(job_id)
    try:
        requeue(get_state().dashboard_redis, job_id)
    except InvalidJobOperation:
        status = job.get_status(refresh=False)
        raise ApiError(
            f"job {job_id!r} is {status.value if status else 'without a status'}: "
            "only a job of the failed registry can be requeued",
            status=409,
            code="conflict",
        ) from None
    return _json({"status": "OK"})


def requeue_all(queue_name: str) -> Any:
    """Requeue every job of the queue's failed registry, attempts restored."""
    conn = get_state().dashboard_redis
    registry = Queue(queue_name, connection=conn, serializer=JSONSerializer).failed_job_registry
    count = 0
    for job_id in registry.get_job_ids(cleanup=False):
        try:
            requeue(conn, job_id)
            count += 1
        except (NoSuchJobError, InvalidJobOperation):
            registry.remove(job_id)
    return _json({"status": "OK", "count": count})


def compact_queue(queue_name: str) -> Any:
    """Drop the ids of jobs that no longer exist from a queue; an empty queue has none to drop."""
    queue = Queue(queue_name, connection=get_state().dashboard_redis, serializer=JSONSerializer)
    try:
        queue.compact()
    except ResponseError as exc:
        # RQ renames the queue's list first, and Redis deletes a list when its last id leaves it:
        # a queue with no waiting jobs has no list to rename.
        if "no such key" not in str(exc).lower():
            raise
    return _json({"status": "OK"})


def _whole(name: str, value: str | int, most: int) -> None:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= most:
        raise ApiError(f"{name} must be a whole number from 1 to {most}, got {value!r}")


def _check_listing(registry_name: str, per_page: str | int, order: str, page: str | int) -> None:
    if registry_name not in REGISTRY_NAMES:
        raise ResourceNotFound(f"no registry {registry_name!r}; one of {', '.join(REGISTRY_NAMES)}")
    _whole("per_page", per_page, MAX_PER_PAGE)
    _whole("page", page, MAX_PAGE)
    if order not in ORDERS:
        raise ApiError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")


_shipped_serialize_job = rq_web.serialize_job


def serialize_job(job: Job) -> dict[str, Any]:
    """rq-dashboard's row of a listed job, also for a job whose return value is not JSON."""
    try:
        return _shipped_serialize_job(job)  # type: ignore[no-any-return]
    except UNREADABLE:
        # Only a successful result holds a value to decode, and such a result has no exc_info.
        return {
            "id": job.id,
            "created_at": rq_web.serialize_date(job.created_at),
            "started_at": rq_web.serialize_date(job.started_at),
            "ended_at": rq_web.serialize_date(job.ended_at),
            "exc_info": None,
            "description": rq_web.format_job_description(job),
        }


def list_jobs(
    instance_number: int, queue_name: str, registry_name: str, per_page: str, order: str, page: str
) -> Any:
    """One page of a queue or registry as JSON; a path the shipped view cannot serve is a 4xx."""
    _check_listing(registry_name, per_page, order, page)
    return rq_web.list_jobs(instance_number, queue_name, registry_name, per_page, order, page)


def jobs_overview(
    instance_number: int,
    queue_name: str | None,
    registry_name: str,
    per_page: str | int,
    order: str,
    page: str | int,
) -> Any:
    """The jobs page, for registries and page sizes its listing can serve."""
    _check_listing(registry_name, per_page, order, page)
    return rq_web.jobs_overview(instance_number, queue_name, registry_name, per_page, order, page)


def _registry(queue: Queue, name: str) -> BaseRegistry:
    registries = {
        "failed": queue.failed_job_registry,
        "deferred": queue.deferred_job_registry,
        "started": queue.started_job_registry,
        "finished": queue.finished_job_registry,
        "scheduled": queue.scheduled_job_registry,
        "canceled": queue.canceled_job_registry,
    }
    if name not in registries:
        raise ResourceNotFound(f"no registry {name!r}")
    return registries[name]


def empty_queue(queue_name: str, registry_name: str) -> Any:
    """Delete every job of a queue (``queued``) or of one of its registries."""
    queue = Queue(queue_name, connection=get_state().dashboard_redis, serializer=JSONSerializer)
    if registry_name == "queued":
        count = queue.empty()
        return _json({"status": "OK", "count": count})
    registry = _registry(queue, registry_name)
    count = 0
    for job_id in registry.get_job_ids(cleanup=False):
        job = queue.fetch_job(job_id)
        if job is None:
            registry.remove(job_id)
        else:
            job.delete()
        count += 1
    return _json({"status": "OK", "count": count})


def job_info(instance_number: int, job_id: str) -> Any:
    """One job as JSON (the shipped view assumes byte dependency ids)."""
    job = _fetch(job_id)
    try:
        latest = job.latest_result()
    except UNREADABLE:
        latest = None  # a return value another serializer stored (plain RQ's default, pickle)
    try:
        metadata = current_app.json.dumps(job.get_meta())
    except UNREADABLE:
        metadata = "(not JSON: written by another serializer)"
    data: dict[str, Any] = {
        "id": job.id,
        "created_at": rq_web.serialize_date(job.created_at),
        "enqueued_at": rq_web.serialize_date(job.enqueued_at),
        "started_at": rq_web.serialize_date(job.started_at),
        "ended_at": rq_web.serialize_date(job.ended_at),
        "origin": job.origin,
        "status": job.get_status(),
        "result": latest.return_value if latest and latest.type == Result.Type.SUCCESSFUL else None,
        "exc_info": latest.exc_string if latest else None,
        "description": rq_web.format_job_description(job),
        "metadata": metadata,
    }
    dependencies = [str(dep) for dep in job.dependency_ids]
    if dependencies:
        data["depends_on"] = dependencies
        data["depends_on_status"] = [
            "active" if job.connection.exists(Job.key_for(dep)) else "expired" for dep in dependencies
        ]
    return _json(data)


def list_workers(instance_number: int) -> Any:
    """Workers as JSON, reading their current jobs with the JSON serializer."""
    workers = []
    for worker in Worker.all(connection=get_state().dashboard_redis, serializer=JSONSerializer):
        try:
            current = worker.get_current_job()
        except NoSuchJobError:
            current = None
        workers.append(
            {
                "name": worker.name,
                "pid": worker.pid,
                "queues": [q.name for q in worker.queues],
                "state": str(worker.get_state()),
                "current_job": rq_web.serialize_current_job(current),
                "last_heartbeat": worker.last_heartbeat,
                "birth_date": worker.birth_date,
                "successful_job_count": worker.successful_job_count,
                "failed_job_count": worker.failed_job_count,
                "total_working_time": worker.total_working_time,
                "version": getattr(worker, "version", ""),
                "python_version": getattr(worker, "python_version", ""),
            }
        )
    workers.sort(key=lambda w: (w["state"], w["queues"], w["name"]))
    return _json({"workers": workers})


REPLACED = {
    "job_view": job_view,
    "delete_job_view": delete_job,
    "requeue_job_view": requeue_one,
    "requeue_all": requeue_all,
    "empty_queue": empty_queue,
    "compact_queue": compact_queue,
    "list_jobs": list_jobs,
    "jobs_overview": jobs_overview,
    "job_info": job_info,
    "list_workers": list_workers,
}


def init_dashboard(app: Flask) -> None:
    """Mount rq-dashboard at :data:`URL_PREFIX` on ``app``'s Redis, behind :func:`check_access`."""
    state = app.extensions["redis_archive"]
    rq_web.config.serializer = JSONSerializer
    # The shipped listing calls the module's serialize_job for every row.
    rq_web.serialize_job = serialize_job
    app.config.setdefault("RQ_DASHBOARD_POLL_INTERVAL", 2500)
    app.config["RQ_DASHBOARD_REDIS_URL"] = (describe(state.dashboard_redis),)
    app.config["RQ_DASHBOARD_DISABLE_DELETE"] = state.settings.dashboard_read_only
    app.config["DASHBOARD_READ_ONLY"] = state.settings.dashboard_read_only
    app.redis_conn = state.dashboard_redis  # type: ignore[attr-defined]
    app.register_blueprint(rq_web.blueprint, url_prefix=URL_PREFIX)
    # The shipped hook opens a new client per request; ours uses the app's client.
    app.before_request_funcs[BLUEPRINT] = [_guard_dashboard]
    for name, view in REPLACED.items():
        endpoint = f"{BLUEPRINT}.{name}"
        if endpoint not in app.view_functions:
            raise RuntimeError(f"rq-dashboard has no endpoint {endpoint}; check its version")
        app.view_functions[endpoint] = view
