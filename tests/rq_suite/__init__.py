"""RQ's own test suite as the compatibility bar for ``consumer.worker.FastWorker`` (``make test-rq``).

- :mod:`.run`: the runner. Fetches the sdist of the installed RQ, extracts its ``tests/``,
  starts private redis-servers, runs RQ's worker-related test modules twice (RQ's worker
  classes, then ``FastWorker`` swapped in), and compares the two runs per test id against
  ``known_differences.txt``.
- :mod:`.patches`: what every Python process of a run does at start (``site/sitecustomize.py``):
  send RQ's ``localhost:6379`` connections to the run's private server, and in the FastWorker
  run put FastWorker subclasses where RQ's worker classes were.
- :mod:`.plugin`: the pytest plugin of a run: a guard that the redirect is on, a record of the
  worker classes each test used, reaping of processes a test left behind, and the outcomes
  written to a JSON file for the runner.

None of these files is a ``test_*.py``: the project's own ``make test`` does not collect them.
"""
