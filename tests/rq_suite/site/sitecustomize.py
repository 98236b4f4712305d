"""Run by every Python process of an RQ suite run (the runner puts this folder on PYTHONPATH).

Applies :func:`rq_suite.patches.install_from_env` before anything else is imported. A process
that cannot apply it exits at once: without the redirect it would talk to the Redis on
``localhost:6379``, which the suite must never touch.
"""

import os
import sys
import traceback

try:
    from rq_suite import patches

    patches.install_from_env()
except BaseException:
    traceback.print_exc()
    sys.stderr.write("rq-suite: could not patch this process; exiting (see above)\n")
    sys.stderr.flush()
    os._exit(70)
