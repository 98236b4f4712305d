"""Settings from the environment: defaults, parsing, and clear errors."""

from __future__ import annotations

import pytest

from shared.exceptions import ConfigurationError
from shared.settings import Settings, parse_host_ports


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.database_url.startswith("sqlite:///")
    assert settings.job_timeout == 60
    assert settings.max_body_bytes == 65536
    assert settings.job_attempts == 3
    assert settings.lock_urls == ("redis://127.0.0.1:6379/0",)


def test_values_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "REDIS_URL": "rediss://:pw@example:6380/2",
            "JOB_TIMEOUT": "90",
            "RETRY_INTERVALS": "1, 5,10",
            "REDIS_SENTINELS": "127.0.0.1:26379,[::1]:26380",
            "LOCK_REDIS_URLS": "redis://a:1/0, redis://b:2/0",
            "DASHBOARD_READ_ONLY": "yes",
            "ENQUEUE_RETRY_SECONDS": "2.5",
            "ALERT_WEBHOOK_URL": "",
        }
    )
    assert settings.redis_url == "rediss://:pw@example:6380/2"
    assert settings.job_timeout == 90
    assert settings.retry_intervals == (1, 5, 10)
    assert settings.sentinels == (("127.0.0.1", 26379), ("::1", 26380))
    assert settings.lock_urls == ("redis://a:1/0", "redis://b:2/0")
    assert settings.dashboard_read_only is True
    assert settings.enqueue_retry_seconds == 2.5
    assert settings.alert_webhook_url is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOB_TIMEOUT": "eighty"}, "JOB_TIMEOUT must be an integer"),
        ({"MAX_BODY_BYTES": "0"}, "MAX_BODY_BYTES must be >= 1"),
        ({"JOB_ATTEMPTS": "0"}, "JOB_ATTEMPTS must be >= 1"),
        ({"DASHBOARD_READ_ONLY": "maybe"}, "DASHBOARD_READ_ONLY must be a boolean"),
        ({"ENQUEUE_RETRY_SECONDS": "soon"}, "ENQUEUE_RETRY_SECONDS must be a number"),
        ({"REDIS_SENTINELS": "localhost"}, "expected host:port"),
    ],
)
def test_bad_values_raise_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)


def test_the_commands_own_variables_are_not_settings() -> None:
    # HOST and PORT are redis-archive serve's options (click reads them); they are not settings.
    cli_only = {"HOST": "0.0.0.0", "PORT": "not a port", "WORKERS": "many"}
    assert Settings.from_env(cli_only) == Settings.from_env({})


def test_settings_are_frozen_and_overridable() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.job_timeout = 1  # type: ignore[misc]
    assert settings.with_overrides(job_timeout=2).job_timeout == 2
    with pytest.raises(ConfigurationError, match="unknown settings: nope"):
        settings.with_overrides(nope=1)


def test_parse_host_ports_rejects_bad_port() -> None:
    with pytest.raises(ConfigurationError):
        parse_host_ports("X", "host:port")
