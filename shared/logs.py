"""Log lines of this project's packages on stderr, in server and worker processes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def show_logs(names: Iterable[str], level: str) -> None:
    """Give each logger in ``names`` a stderr handler at ``level`` unless it has one already.

    Servers and RQ configure only their own loggers; a process started by them (an HTTP
    worker, ``rq worker -c consumer.settings``) calls this from its entry point.
    """
    formatter = logging.Formatter(FORMAT)
    for name in names:
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(formatter)
            logger.addHandler(handler)
            logger.setLevel(level.upper())
