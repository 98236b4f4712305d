"""Clients of a Redis Cluster for every part of the system, built from the settings.

- :func:`slot_client`: an ordinary ``Redis`` pinned to one namespace's slot (what RQ, the
  producer's writer and ``FastWorker`` use);
- :class:`NamespaceRedis`: the same, built by RQ itself (``RQ_CONNECTION_CLASS``) for the
  namespace in ``RQ_KEY_PREFIX``, so plain ``rq worker -c consumer.settings`` follows its slot;
- :func:`home_keys`: where the project's own global figures live (memory samples, lock
  statistics, the enqueue latency histogram): the ``{archive}`` slot on a cluster.
"""

from __future__ import annotations

import functools
from typing import Any

from redis import Redis
from rq.defaults import RQ_KEY_PREFIX

from shared.cluster.namespaces import REGISTRY_TAG, Namespace, plan
from shared.cluster.slots import ClusterMap, SlotConnectionPool
from shared.connections.factory import client_options, master_options, rq_client_options
from shared.exceptions import ConfigurationError
from shared.keys import KEYS, Keys
from shared.settings import Settings

#: How the errors name the cluster settings.
SETTINGS_HINT = (
    "set REDIS_CLUSTER_NODES=host:port,... (and QUEUE_NAMESPACES, e.g. member=3); see docs/cluster.md"
)


@functools.lru_cache(maxsize=8)
def _map(seeds: tuple[tuple[str, int], ...], password: str | None, username: str | None) -> ClusterMap:
    options: dict[str, Any] = {}
    if password:
        options["password"] = password
    if username:
        options["username"] = username
    return ClusterMap(list(seeds), **options)


def cluster_map(settings: Settings) -> ClusterMap:
    """The process's map of ``settings.cluster_nodes`` (one per seed list, shared by every client)."""
    if not settings.cluster_nodes:
        raise ConfigurationError("REDIS_CLUSTER_NODES is not set")
    auth = _auth(settings)
    return _map(settings.cluster_nodes, auth.get("password"), auth.get("username"))


def _auth(settings: Settings) -> dict[str, Any]:
    """Credentials and TLS from ``REDIS_URL`` and ``REDIS_PASSWORD``, as for a Sentinel master."""
    options = master_options(settings)
    options.pop("connection_class", None)
    options.pop("db", None)
    return options


def slot_client(settings: Settings, tag: str, **options: Any) -> Redis:
    """A client of the master serving hash tag ``tag``'s slot, following it across failovers."""
    kwargs = {**client_options(settings), **_auth(settings), **options}
    pool = SlotConnectionPool(cluster_map(settings), tag, **kwargs)
    return Redis(connection_pool=pool)


def is_tag(prefix: str) -> bool:
    """Whether ``prefix`` is a namespace tag (``{member-2}``)."""
    return prefix.startswith("{") and prefix.endswith("}") and len(prefix) > 2


def process_tag(settings: Settings) -> str:
    """The slot this process talks to: its namespace (``RQ_KEY_PREFIX``) or the home slot."""
    return RQ_KEY_PREFIX if is_tag(RQ_KEY_PREFIX) else REGISTRY_TAG


def home_keys(settings: Settings) -> Keys:
    """Key names of the project's global figures: ``archive:...``, or in the ``{archive}`` slot."""
    return Keys(REGISTRY_TAG) if settings.cluster_nodes else KEYS


def namespaces(settings: Settings, registry: Redis | None = None) -> dict[str, list[Namespace]]:
    """Every queue's namespaces on the cluster (see :func:`shared.cluster.namespaces.plan`)."""
    own = registry is None
    client = slot_client(settings, REGISTRY_TAG) if registry is None else registry
    try:
        return plan(settings, cluster_map(settings), client)
    finally:
        if own:
            client.close()


#: RQ's client class for a namespace of a cluster (``RQ_CONNECTION_CLASS``).
CONNECTION_CLASS = "shared.cluster.clients.NamespaceRedis"


def namespace_env(tag: str) -> dict[str, str]:
    """What a process serving namespace ``tag`` needs in its environment (RQ reads both)."""
    return {"RQ_KEY_PREFIX": tag, "RQ_CONNECTION_CLASS": CONNECTION_CLASS}


class NamespaceRedis(Redis):
    """``RQ_CONNECTION_CLASS=shared.cluster.clients.NamespaceRedis``: RQ's client of one namespace.

    RQ builds its connection with ``connection_class.from_url(REDIS_URL)``; this class ignores
    the URL's host and port and pins the client to the slot of ``RQ_KEY_PREFIX`` on the cluster
    named by ``REDIS_CLUSTER_NODES``.
    """

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> NamespaceRedis:
        """The namespace client for this process's settings (``url`` only for its credentials)."""
        settings = Settings.from_env()
        if not settings.cluster_nodes:
            raise ConfigurationError(f"NamespaceRedis needs a cluster: {SETTINGS_HINT}")
        if not is_tag(RQ_KEY_PREFIX):
            raise ConfigurationError(
                f"RQ_KEY_PREFIX={RQ_KEY_PREFIX!r} is not a namespace: a worker on a cluster serves one "
                "namespace, e.g. RQ_KEY_PREFIX={member} (redis-archive worker sets it)"
            )
        # As consumer.settings gives RQ's own worker classes off a cluster: a client that rides out outages.
        options = {**rq_client_options(settings), **_auth(settings), **kwargs}
        return cls(connection_pool=SlotConnectionPool(cluster_map(settings), RQ_KEY_PREFIX, **options))
