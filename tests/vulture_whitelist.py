"""Names vulture reports as unused in producer/, consumer/ and shared/ that are used all the same.

vulture reads this file beside the packages (tests/test_dead_code.py); a name used here counts
as used everywhere. Each group says who uses its names. Anything vulture reports that is not
here is dead code: remove it, or add it to a group whose reason holds.
"""

from typing import Any

_: Any = None

_used = (
    # RQ calls these by the dotted path the producer enqueues (shared.constants, producer.enqueue):
    # the job functions and the success/failure callbacks.
    _.create_member,
    _.probe_key,
    _.probe_sweep,
    _.probe_capacity,
    _.probe_watch,
    _.on_success,
    _.on_failure,
    # `rq worker -c consumer.settings` reads the settings module's upper-case names.
    _.QUEUES,
    _.SENTINEL,
    # RQ's worker and death-penalty protocols: RQ's own code calls these overrides and reads the
    # attributes (FastWorker, its job runner and its command listener).
    _.work,
    _.unsubscribe,
    _.kill_horse,
    _.stop_scheduler,
    _.pubsub_thread,
    _.setup_death_penalty,
    _.cancel_death_penalty,
    # RQ's private attributes the seam sets for RQ's own code to read (shared/rqmodel/claims.py,
    # internals.py, restore.py), and the hooks RQ calls on the classes bound to a namespace
    # (shared/rqmodel/classes.py).
    _._status,
    _._state,
    _._job,
    _._unreadable_meta,
    _.group_id,
    _.allow_dependency_failures,
    _.enqueue_at_front,
    _.repeat_intervals,
    _.rate_limit_key,
    _.rate_limit_concurrency,
    _.get_key,
    _.redis_job_namespace_prefix,
    # Flask calls these: views, request hooks, error handlers, a converter (its regex) registered
    # when the blueprint is; and the app attributes Flask and rq-dashboard read.
    _.healthz,
    _.readyz,
    _.openapi_json,
    _.get_job,
    _.enqueue_member,
    _.enqueue_members_bulk,
    _.get_member,
    _.list_members,
    _.decrement,
    _.enqueue_decrement,
    _.set_value,
    _.get_value,
    _.delete_value,
    _.redis_page,
    _._require_token,
    _._log_request,
    _.session_interface,
    _.make_null_session,
    _._register_converter,
    _.regex,
    _._api_error,
    _._http_error,
    _._out_of_memory,
    _._database_unavailable,
    _._unexpected,
    _.merge_slashes,
    _.sort_keys,
    _.redis_conn,
    # granian serves the app by its dotted path (redis-archive serve: producer.server:served_app).
    _.served_app,
    # pydantic reads model fields, model_config and validators; Jinja templates read the fields of
    # the redis page's verdict and capacity (producer/templates/dashboard/redis.html).
    _.model_config,
    _.age,
    _.email,
    _.jobId,
    _.jobIds,
    _.createdAt,
    _.enqueuedAt,
    _.startedAt,
    _.endedAt,
    _.maxAttempts,
    _.ttlMs,
    _._keys_or_values_given,
    _._start_not_after_stop,
    _.safe,
    _.sampled,
    _.bytes_per_job,
    _.free_bytes,
    _.jobs_that_fit,
    _.basis,
    # prometheus_client calls a collector's collect(); redis-py calls a retry policy's
    # call_with_retry(); SQLAlchemy calls the connect listener; click calls a ParamType's convert()
    # and the commands its decorators register.
    _.collect,
    _.call_with_retry,
    # redis-py reads a connection's next_health_check before each command
    # (shared/connections/raw.py sets it after a direct read, as read_response does).
    _.next_health_check,
    _._sqlite_pragmas,
    _.convert,
    _.demo,
    _.serve,
    _.monitor,
    _.key_cmd,
    _.sweep_cmd,
    _.capacity_cmd,
    _.watch_cmd,
    # The seam names every key of RQ's model; the Lua builds the dependents set's name itself and
    # tests/shared/rqmodel/test_keys.py compares this one with RQ's own.
    _.dependents,
    # What the tests inspect or reset: the command listener's state and the fault policy's failover
    # count (tests/consumer), per-process caches dropped between tests (consumer.context,
    # consumer.goods), the routes without an OpenAPI operation (tests/producer/test_openapi.py), and
    # the fault controls of the local topologies (tests/, the soak, bench/).
    _.listening,
    _.failovers,
    _.dispose_engines,
    _.close_redlocks,
    _.undocumented_rules,
    _.kill_master,
    _.restart,
    _.wait_for_new_master,
)
