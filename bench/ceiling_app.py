"""The ceiling of the HTTP benchmark: the same JSON POST answered by a bare Flask view.

No validation, no Redis, no hooks: ``request.get_json`` and a 202 with a small JSON body of the
producer's size. Served by ``redis-archive serve``'s granian argv (:func:`bench.http.ceiling_argv`),
so the gap between this and ``POST /queue/members`` is what the producer's own work costs.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

#: A job id's length (RQ's ``str(uuid4())``), so the answer is as long as the producer's.
JOB_ID = "00000000-0000-4000-8000-000000000000"


def create_app() -> Flask:
    """A Flask app with one view that parses the JSON body and answers 202."""
    app = Flask(__name__)

    @app.post("/queue/members")
    def accept_member() -> Any:
        request.get_json()
        return {"jobId": JOB_ID}, 202

    return app
