"""The Lua scripts that write RQ's data model, each in a ``.lua`` file beside this module."""

from __future__ import annotations

from shared.connections.raw import LuaScript

#: Claim jobs for a worker (pop, read the hash, mark started, register the execution).
CLAIM = LuaScript.load(__package__, "claim.lua")
#: Write the successes of a worker's jobs (status, result stream, registries, counters).
FINISH = LuaScript.load(__package__, "finish.lua")
#: Enqueue many jobs of one template, all or none.
WRITE_JOBS = LuaScript.load(__package__, "write_jobs.lua")

#: Scripts the worker loads together when a server lacks one.
WORKER_SCRIPTS = (CLAIM, FINISH)
#: Scripts the producer loads together when a server lacks one.
PRODUCER_SCRIPTS = (WRITE_JOBS,)
