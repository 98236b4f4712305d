"""Run by every Python process of an RQ suite run (the runner puts this folder on PYTHONPATH).

Loads the harness as the top-level package ``rq_suite`` (from this folder's parent, without
putting the project's ``tests/`` on the path, whose packages mirror ``consumer`` and ``shared``
and would shadow them) and applies :func:`rq_suite.patches.install_from_env` before anything
else is imported. A process that cannot apply it exits at once: without the redirect it would
talk to the Redis on ``localhost:6379``, which the suite must never touch.
"""

import importlib.util
import os
import sys
import traceback
from pathlib import Path

try:
    _harness = Path(__file__).resolve().parent.parent
    _spec = importlib.util.spec_from_file_location(
        "rq_suite", _harness / "__init__.py", submodule_search_locations=[str(_harness)]
    )
    assert _spec is not None and _spec.loader is not None
    _package = importlib.util.module_from_spec(_spec)
    sys.modules["rq_suite"] = _package
    _spec.loader.exec_module(_package)

    from rq_suite import patches

    patches.install_from_env()
except BaseException:
    traceback.print_exc()
    sys.stderr.write("rq-suite: could not patch this process; exiting (see above)\n")
    sys.stderr.flush()
    os._exit(70)
