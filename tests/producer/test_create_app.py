"""The app factory's settings: the defaults, then the environment, then the mapping."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from producer import create_app
from producer.state import get_state
from shared.constants import DEFAULT_FAILURE_TTL
from shared.exceptions import ConfigurationError
from shared.settings import Settings
from tests.servers import close_app


def test_the_mapping_wins_over_the_environment_which_wins_over_the_defaults(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, db_url: str
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", "sqlite:///nowhere/else.db")
    monkeypatch.setenv("JOB_ATTEMPTS", "5")
    monkeypatch.setenv("RESULT_TTL", "77")
    monkeypatch.delenv("FAILURE_TTL", raising=False)
    app = create_app({"TESTING": True, "database_url": db_url, "job_attempts": 2})
    try:
        with app.app_context():
            settings = get_state().settings
        assert (settings.database_url, settings.job_attempts) == (db_url, 2)  # the mapping
        assert (settings.redis_url, settings.result_ttl) == (redis_url, 77)  # the environment
        assert settings.failure_ttl == DEFAULT_FAILURE_TTL  # the default
        assert app.config["TESTING"] is True
        assert app.config["MAX_CONTENT_LENGTH"] == settings.max_body_bytes
    finally:
        close_app(app)


def test_every_field_of_a_settings_leaves_the_environment_no_say(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setenv("API_TOKEN", "from-the-environment")
    monkeypatch.setenv("MAX_BODY_BYTES", "10")
    app = create_app({"TESTING": True, **asdict(settings)})
    try:
        with app.app_context():
            assert get_state().settings == settings
        assert app.config["MAX_CONTENT_LENGTH"] == settings.max_body_bytes
    finally:
        close_app(app)


def test_a_key_that_names_no_setting_is_refused(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="unknown settings: max_body"):
        create_app({**asdict(settings), "max_body": 100})
