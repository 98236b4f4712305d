"""Writing jobs as ``Queue.enqueue`` writes them: the same hash, field for field, in one round trip.

A :class:`JobTemplate` holds the fields RQ would write for every job of one (queue, function,
name), computed once by RQ itself (``Queue.create_job`` and ``Job.to_dict``) and packed once;
a job adds only its id, its data and two timestamps. One transaction writes the hash(es),
registers the queue, pushes the id(s) and counts the jobs: atomic, one round trip (RQ needs
two per job and builds a ``Job`` each time). ``tests/producer/test_enqueue.py`` compares the
hashes with RQ's.

One job is written by ``MULTI``, ``HSET``, ``SADD``, ``RPUSH``, ``HINCRBY``, ``EXEC``, sent at
once: the same commands in a script cost Redis 6 to 10 us more CPU per job (its arguments are
copied into Lua and back), and on a busy producer Redis shares the same CPUs. Measured on 2
cores: Redis' CPU per ``POST /queue/members`` 30 -> 23 us, served requests a second +3%
(6,478 -> 6,670, median of 3 alternating rounds), one-by-one enqueue in process 9,846 ->
10,246/s (median of 3). Many jobs go in one ``write_jobs.lua`` call, whose loop builds each
hash from the template inside Redis instead of sending the template once per job.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis import Redis
from redis.exceptions import NoScriptError
from rq.job import JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import now

from shared.connections.raw import HeldConnections, bulk, first_error, pack
from shared.rqmodel.dates import Stamp, new_id
from shared.rqmodel.internals import set_status
from shared.rqmodel.keys import RQKeys
from shared.rqmodel.scripts import PRODUCER_SCRIPTS, WRITE_JOBS

#: Replies to one job's write: MULTI's OK, QUEUED for each of the 4 commands, EXEC's list.
ONE_REPLIES = 6
#: Payloads up to this many bytes are stored as they are (RQ reads data that is not zlib as is).
RAW_PAYLOAD = 128
#: Payloads up to this many bytes are compressed with a window of the same size (``wbits`` 9).
SMALL_PAYLOAD = 512


def compress(raw: bytes) -> bytes:
    """A job's ``data`` field: ``zlib.compress(raw)`` as RQ stores it, but cheaper for small payloads.

    - Up to :data:`RAW_PAYLOAD` bytes, ``raw`` itself. Deflate saves a few bytes there (a
      105-byte member payload compresses to 96) for about 4 us of the enqueue's CPU (5 us of
      a served ``POST /queue/members``, 3%, under ``perf``). RQ's ``Job.restore`` and the
      worker's claim read a ``data`` that is not a zlib stream as it is; a JSON payload
      starts with ``[``, which no zlib header does.
    - Up to :data:`SMALL_PAYLOAD`, compressed with a window of that size. ``zlib.compress``
      sets up a 256 KiB deflate state per call (about 50 us here, more than the enqueue's
      own round trip); a payload that fits a 512-byte window compresses the same with a
      2 KiB state (about 3 us). The stream is standard zlib: ``zlib.decompress``, and so RQ,
      reads it unchanged.
    """
    if len(raw) <= RAW_PAYLOAD:
        return raw
    if len(raw) > SMALL_PAYLOAD:
        return zlib.compress(raw)
    compressor = zlib.compressobj(6, zlib.DEFLATED, 9, 1)
    return compressor.compress(raw) + compressor.flush()


class JobTemplate:
    """The fields RQ would write for every job of one (queue, function, name), packed once.

    ``counters`` is the hash where the script counts the jobs as enqueued (the project's
    :attr:`shared.keys.Keys.job_stats`, given by the caller: the seam knows RQ's keys only).
    """

    def __init__(
        self,
        connection: Redis,
        keys: RQKeys,
        counters: str,
        queue_name: str,
        func: str,
        options: Mapping[str, Any],
    ) -> None:
        queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
        options = dict(options)
        job = queue.create_job(
            func,
            timeout=options.pop("job_timeout"),
            retry=options.pop("retry", None),
            status=JobStatus.QUEUED,
            **options,
        )
        job.origin = queue_name
        job.enqueued_at = now()
        set_status(job, JobStatus.QUEUED)
        mapping = job.to_dict()
        for volatile in ("data", "created_at", "enqueued_at"):
            mapping.pop(volatile)
        # Encoded as redis-py would encode them for HSET.
        encode = connection.get_encoder().encode
        static: list[bytes] = []
        for field, value in mapping.items():
            static += [encode(field), encode(value)]  # type: ignore[no-untyped-call]
        self.func = func
        self.keys = keys
        queue_keys = [keys.queue(queue_name).encode(), keys.queues.encode(), counters.encode()]
        counter = f"{queue_name}:enqueued".encode()
        self.static_packed = b"".join(bulk(part) for part in static)
        self.static_count = len(static)
        # Many: EVALSHA sha 3 queue queues stats | stamp n counter job-prefix (id data)... static...
        head = [b"EVALSHA", WRITE_JOBS.sha.encode(), b"3", *queue_keys]
        self.head = b"".join(bulk(part) for part in head)
        self.head_count = len(head)
        self.counter = bulk(counter)
        self.job_prefix = bulk(keys.job_prefix.encode())
        # One: MULTI | HSET <job key> static... 3 volatile pairs | SADD queues queue |
        # RPUSH queue <id> | HINCRBY stats counter 1 | EXEC
        queue_key, queues_key, counters_key = queue_keys
        self.one_open = pack([(b"MULTI",)]) + b"*%d\r\n" % (2 + self.static_count + 6) + bulk(b"HSET")
        self.one_push = pack([(b"SADD", queues_key, queue_key)]) + b"*3\r\n$5\r\nRPUSH\r\n" + bulk(queue_key)
        self.one_close = pack([(b"HINCRBY", counters_key, counter, b"1"), (b"EXEC",)])

    def data(self, args: Sequence[Any]) -> bytes:
        """The job's ``data`` field for ``func(*args)``, as RQ's JSON serializer writes it."""
        return compress(json.dumps([self.func, None, list(args), {}]).encode())

    def pack_one(self, job_id: str, args: Sequence[Any]) -> bytes:
        """The transaction writing ``func(*args)`` under ``job_id``: :data:`ONE_REPLIES` replies."""
        stamp = bulk(Stamp.now())
        raw_id = job_id.encode()
        return b"".join(
            (
                self.one_open,
                bulk(self.keys.job_prefix.encode() + raw_id),
                self.static_packed,
                b"$10\r\ncreated_at\r\n",
                stamp,
                b"$11\r\nenqueued_at\r\n",
                stamp,
                b"$4\r\ndata\r\n",
                bulk(self.data(args)),
                self.one_push,
                bulk(raw_id),
                self.one_close,
            )
        )

    def pack(self, ids: Sequence[str], arg_lists: Sequence[Sequence[Any]]) -> bytes:
        """The ``write_jobs.lua`` call that writes one job per argument list under ``ids``."""
        stamp = bulk(Stamp.now())
        parts = [stamp, bulk(b"%d" % len(ids)), self.counter, self.job_prefix]
        for one_id, job_args in zip(ids, arg_lists, strict=True):
            parts += [bulk(one_id.encode()), bulk(self.data(job_args))]
        count = self.head_count + 4 + 2 * len(ids) + self.static_count
        return b"*%d\r\n" % count + self.head + b"".join(parts) + self.static_packed


class JobWriter:
    """Writes jobs into one namespace of one Redis, by dotted path, in RQ's format.

    ``options(name)`` gives the RQ enqueue options (``job_timeout``, ``retry``, TTLs,
    callbacks, meta) of the jobs called ``name``; templates are built once per (queue,
    function, name). Each thread writes on a connection of its own held between calls. The
    jobs are counted as enqueued in the hash ``counters`` (see :class:`JobTemplate`).
    """

    def __init__(
        self, client: Redis, options: Callable[[str], Mapping[str, Any]], keys: RQKeys, counters: str
    ) -> None:
        self.client = client
        self.options = options
        self.keys = keys
        self.counters = counters
        self.templates: dict[tuple[str, str, str], JobTemplate] = {}
        self.held = HeldConnections(client)

    def template(self, queue_name: str, func: str, name: str) -> JobTemplate:
        """The template of jobs ``func`` called ``name`` on ``queue_name``."""
        template = self.templates.get((queue_name, func, name))
        if template is None:
            template = self.templates[queue_name, func, name] = JobTemplate(
                self.client, self.keys, self.counters, queue_name, func, self.options(name)
            )
        return template

    def write(
        self,
        queue_name: str,
        func: str,
        name: str,
        arg_lists: Sequence[Sequence[Any]],
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Write one job per argument list, atomically, in one round trip; returns their ids.

        Connection errors are raised after the connection was dropped: whether the write
        went through is then unknown (see :meth:`exists`).
        """
        ids = list(ids) if ids is not None else [new_id() for _ in arg_lists]
        template = self.template(queue_name, func, name)
        if len(ids) == 1:
            replies = self.held.call(template.pack_one(ids[0], arg_lists[0]), ONE_REPLIES)
            # A command refused while queued answers an error and EXEC then aborts; a command
            # that failed when run is an error in EXEC's list (the others ran, as in a script).
            error = first_error(replies) or first_error(replies[-1] or ())
            if error is not None:
                raise error
            return ids
        command = template.pack(ids, arg_lists)
        [reply] = self.held.call(command)
        if isinstance(reply, NoScriptError):
            # First use on this server (or after a restart or failover): load, then run it.
            self.held.load_scripts(PRODUCER_SCRIPTS)
            [reply] = self.held.call(command)
        if isinstance(reply, Exception):
            raise reply
        return ids

    def exists(self, job_id: str) -> bool:
        """Whether the job hash of ``job_id`` is there (a write writes all its jobs or none)."""
        return bool(self.client.exists(self.keys.job(job_id)))

    def withdraw(self, queue_name: str, ids: Sequence[str]) -> int:
        """Unqueue the jobs no worker has taken yet and delete their hashes; returns how many."""
        queue_key = self.keys.queue(queue_name)
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.lrem(queue_key, -1, job_id)
        removed = pipe.execute()
        gone = [self.keys.job(job_id) for job_id, count in zip(ids, removed, strict=True) if count]
        if gone:
            self.client.delete(*gone)
        return len(gone)
