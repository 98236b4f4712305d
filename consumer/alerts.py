"""Alerts after a job's last attempt failed: an ERROR log line and an optional webhook POST."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

logger = logging.getLogger(__name__)


def send_alert(webhook_url: str | None, payload: dict[str, Any], timeout: float = 5.0) -> bool:
    """Log ``payload`` at ERROR and POST it as JSON to ``webhook_url`` when set.

    Returns whether the webhook accepted it. A failing webhook is logged, never raised: the
    job has already failed and the alert must not hide that.
    """
    logger.error(
        "ALERT job %s (%s) failed after %s attempts: %s",
        payload.get("jobId"),
        payload.get("name"),
        payload.get("attempts"),
        payload.get("error"),
    )
    if not webhook_url:
        return False
    body = json.dumps(payload).encode()
    request = urllib.request.Request(
        webhook_url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            ok = 200 <= response.status < 300
    except (urllib.error.URLError, OSError) as exc:
        logger.error("alert webhook %s unreachable: %s", webhook_url, exc)
        return False
    if not ok:
        logger.error("alert webhook %s answered %s", webhook_url, response.status)
    return ok
