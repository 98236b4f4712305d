"""RQ's own test suite as the compatibility bar for ``consumer.worker.FastWorker`` (``make test-rq``).

- :mod:`.run`: the runner. Fetches the sdist of the installed RQ, extracts its ``tests/``,
  starts private redis-servers, runs RQ's worker-related test modules twice (RQ's worker
  classes, then ``FastWorker`` swapped in) side by side, and hands both to :mod:`.verdict`.
- :mod:`.verdict`: ``known_differences.txt``, the comparison per test id, the report.
- :mod:`.patches`: what every Python process of a run does at start (``site/sitecustomize.py``):
  send RQ's ``localhost:6379`` connections to the run's private server, in the FastWorker run
  put FastWorker subclasses (:mod:`.workers`) where RQ's worker classes were, note which worker
  classes each test used.
- :mod:`.plugin`: the pytest plugin of a run: a guard that the redirect is on, each test in a
  forked process (:mod:`.forked`), turns for tests that write fixed ``/tmp`` paths, reaping of
  what a test left running, and the outcomes written to a JSON file for the runner.

None of these files is a ``test_*.py``: the project's own ``make test`` does not collect them.
"""
