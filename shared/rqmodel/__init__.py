"""The one seam for RQ's data model: everything the project knows about RQ's storage.

Where speed needs the project to write RQ's keys directly (the producer's enqueue, the fast
worker's claim and finish, abandoned-job recovery), it goes through this package:

- :mod:`~shared.rqmodel.keys`: every key name of RQ's, built from RQ's own prefix
  (``rq.defaults.RQ_KEY_PREFIX``, so ``RQ_KEY_PREFIX={rq}`` or ``myapp`` moves every key); the
  project's own keys are in :mod:`shared.keys`;
- the Lua scripts (``claim.lua``, ``finish.lua``, ``write_jobs.lua``), loaded
  by :mod:`~shared.rqmodel.scripts`;
- :mod:`~shared.rqmodel.writes`: the job hash ``Queue.enqueue`` writes, from a template;
- :mod:`~shared.rqmodel.claims`: the worker's claim and success arguments, claimed jobs;
- :mod:`~shared.rqmodel.restore`: ``Job.restore`` without RQ's per-field overhead;
- :mod:`~shared.rqmodel.dates`: RQ's timestamp format and job ids;
- :mod:`~shared.rqmodel.internals`: the few private RQ attributes the fast paths touch.

Nothing outside this package names an ``rq:`` key or a private RQ attribute. RQ is pinned to
the minor these copies were checked against; ``make test-rq`` runs RQ's own test suite
against the fast worker, and the project's parity matrix compares end states with RQ's.
"""
