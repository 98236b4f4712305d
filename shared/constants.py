"""Queue names, job paths and defaults, in one place.

Redis key names are in :mod:`shared.keys` (the project's, under one prefix) and
:mod:`shared.rqmodel.keys` (RQ's).
"""

from __future__ import annotations

# Queue names (the Bull queue of the original stack was called ``member``).
MEMBER_QUEUE = "member"
GOODS_QUEUE = "goods"
PROBE_QUEUE = "probe"
ALL_QUEUES = (MEMBER_QUEUE, GOODS_QUEUE, PROBE_QUEUE)

# Dotted paths of job functions: the producer enqueues by name and never imports consumer code.
CREATE_MEMBER_JOB = "consumer.jobs.create_member"
CREATE_MEMBER_JOB_NAME = "createMemberJob"

# Defaults.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "sqlite:///redis-archive.db"
DEFAULT_PORT = 1111
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_JOB_ATTEMPTS = 3
DEFAULT_RETRY_INTERVALS = (1, 2)
DEFAULT_RESULT_TTL = 24 * 3600
DEFAULT_FAILURE_TTL = 7 * 24 * 3600
DEFAULT_JOB_TIMEOUT = 60
DEFAULT_SOCKET_TIMEOUT = 5.0
DEFAULT_ENQUEUE_RETRY_SECONDS = 10.0
DEFAULT_MEMORY_SAMPLE_SECONDS = 10.0
#: How long memory samples and per-minute throughput are kept, and at most how many samples.
STATS_WINDOW_SECONDS = 3600
MEMORY_SAMPLES_MAX = 720
DEFAULT_WORKER_MASTER_TIMEOUT = 60.0
#: Seconds a job keeps retrying a database it cannot reach before that counts as a failed attempt.
DEFAULT_DB_RETRY_SECONDS = 300.0


#: Fields of the distributed lock's statistics hash in the queue's Redis (``Keys.lock_stats``).
LOCK_STATS_FIELDS = ("acquired", "contended", "failed", "released", "extended", "lost")
#: The lock of goods ``<id>`` is named ``goods:<id>`` (its key ``archive:lock:goods:<id>``).
GOODS_LOCK_PREFIX = "goods:"
DECREMENT_STOCK_JOB = "consumer.goods.decrement_stock"
DECREMENT_STOCK_JOB_NAME = "decrementStockJob"
#: Dotted paths of the memory-probe jobs (queue ``probe``), by probe kind.
PROBE_JOBS = {
    "key": "consumer.probes.probe_key",
    "sweep": "consumer.probes.probe_sweep",
    "capacity": "consumer.probes.probe_capacity",
    "watch": "consumer.probes.probe_watch",
}
