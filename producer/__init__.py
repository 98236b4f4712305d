"""The producer: a Flask API that validates requests and enqueues jobs into RQ queues."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from shared.cluster.clients import home_keys, namespaces, slot_client
from shared.cluster.namespaces import REGISTRY_TAG
from shared.connections import get_cache_redis, get_redis
from shared.connections.eviction import check_queue_policy
from shared.db import init_db, make_engine
from shared.logs import show_logs
from shared.settings import Settings

from .access_log import register_access_log
from .auth import register_auth
from .background import init_background
from .direct import register_direct
from .error_handlers import register_error_handlers
from .flask_app import ArchiveFlask
from .state import EXTENSION, ArchiveState

logger = logging.getLogger(__name__)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the producer app: settings, one Redis client, one engine, blueprints.

    Settings are the defaults, then the environment (:meth:`Settings.from_env`), then
    ``config``'s lower-case keys, each the name of a :class:`Settings` field (an unknown one is
    a :class:`~shared.exceptions.ConfigurationError`); ``dataclasses.asdict(settings)`` gives
    every field. Upper-case keys are Flask's config: ``TESTING``, and ``BACKGROUND_THREAD``
    (default: not ``TESTING``), which has each process that serves the app start its background
    thread with its first request (:mod:`producer.background`). Unless ``TESTING`` or the root
    logger has a handler, the ``producer`` and ``shared`` loggers write to stderr at ``LOG_LEVEL``.
    """
    config = config or {}
    settings = Settings.from_env()
    overrides = {key: value for key, value in config.items() if not key.isupper()}
    if overrides:
        settings = settings.with_overrides(**overrides)
    app = ArchiveFlask(__name__)
    # An API answers, it does not redirect: "/members//1" is a JSON 404, not an HTML 308.
    app.url_map.merge_slashes = False
    app.config.from_mapping({key: value for key, value in config.items() if key.isupper()})
    # After the mapping: the body limit is a setting (MAX_BODY_BYTES), not a second knob.
    app.config.from_mapping(MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    app.json.sort_keys = False  # type: ignore[attr-defined]

    if settings.cluster_nodes:
        # The home slot for the project's global figures; each namespace gets a client below.
        redis = slot_client(settings, REGISTRY_TAG)
    else:
        redis = get_redis(settings)
    # Refuse to serve on a Redis that may evict queued jobs (EvictionPolicyError).
    cluster = bool(settings.cluster_nodes)
    check_queue_policy(redis, allow=settings.allow_evicting_policy, cluster=cluster)
    engine = make_engine(settings.database_url)
    init_db(engine)
    state = ArchiveState(
        settings=settings,
        redis=redis,
        cache_redis=get_cache_redis(settings, redis),
        engine=engine,
        home_keys=home_keys(settings),
    )
    if settings.cluster_nodes:
        for queue, spaces in namespaces(settings, redis).items():
            for namespace in spaces:
                client = slot_client(settings, namespace.tag)
                check_queue_policy(client, allow=settings.allow_evicting_policy, cluster=True)
                state.add_space(queue, namespace.keys, client)
    app.extensions[EXTENSION] = state
    # First among the request hooks: each serving process starts its background thread (RQ's
    # scheduler share) with its first request, whichever WSGI server runs the app.
    init_background(app)

    register_error_handlers(app)
    register_access_log(app)
    register_auth(app)

    from . import cache, goods, health, jobs, members, probes
    from .dashboard import init_dashboard
    from .metrics import init_metrics
    from .redis_page import bp as redis_page_bp

    app.register_blueprint(health.bp)
    app.register_blueprint(members.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(cache.bp)
    app.register_blueprint(goods.bp)
    app.register_blueprint(probes.bp)
    init_metrics(app)
    init_dashboard(app)
    app.register_blueprint(redis_page_bp)
    register_direct(app, "members.enqueue_member", members.accept_member, 202)
    if not app.testing and not logging.getLogger().handlers:
        # No logging configured (gunicorn, granian and flask run configure only their own
        # loggers): the access log and the job lines go to stderr at LOG_LEVEL. A configured
        # root logger (basicConfig, a server's --log-config, pytest) receives them instead.
        show_logs(("producer", "shared"), settings.log_level)
    return app
