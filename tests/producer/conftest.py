"""Fixtures of the producer's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from shared.settings import Settings
from tests.producer.dashboard_support import PASSWORD, make_app
from tests.servers import close_app


@pytest.fixture
def dash(settings: Settings) -> Iterator[FlaskClient]:
    """A test client of an app with the dashboard open to ``admin``/``PASSWORD``."""
    app = make_app(settings, dashboard_password=PASSWORD, job_attempts=1)
    yield app.test_client()
    close_app(app)
