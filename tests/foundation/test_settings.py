"""A service reads its settings from the environment and says clearly what is wrong with them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chat_service.settings import ChatSettings
from pydantic import ValidationError
from switchboard.redisclient import shown
from switchboard.settings import SettingsError

from tests.conftest import start_chat
from tests.harness import ROOT, STARTUP


def run_chat(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "REDIS"))}
    return subprocess.run(
        [sys.executable, "-m", "chat_service"],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=STARTUP,  # it exits at once, after its imports: slow on a cold, busy machine
    )


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("CHAT_RATE_PER_SECOND", "-1", "CHAT_RATE_PER_SECOND: Input should be greater than 0"),
        ("CHAT_HISTORY_SIZE", "lots", "CHAT_HISTORY_SIZE: Input should be a valid integer"),
        ("PORT", "99999", "PORT: Input should be less than or equal to 65535"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL: Value error, must start with redis://"),
        (
            "REDIS_URL",
            "redis+sentinel://s1:26379,s2/0/switchboard",
            "REDIS_URL: Value error, a redis+sentinel:// URL lists host:port pairs",
        ),
        (
            "REDIS_URL",
            "redis+sentinel://s1:26379,s2:26379/0",
            "REDIS_URL: Value error, a redis+sentinel:// URL is redis+sentinel://host:port",
        ),
        ("REDIS_WAIT_REPLICAS", "-1", "REDIS_WAIT_REPLICAS: Input should be greater than"),
        ("REDIS_WAIT_TIMEOUT", "0", "REDIS_WAIT_TIMEOUT: Input should be greater than 0"),
        ("ALLOWED_ORIGINS", "*", "ALLOWED_ORIGINS: Value error, '*' is not an origin"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL: Value error, must be one of"),
        ("TRUSTED_PROXIES", "gateway", "TRUSTED_PROXIES: Value error, 'gateway' is not an address"),
        ("AUTH_MODE", "closed", "AUTH_MODE: Input should be 'open' or 'token'"),
        ("AUTH_SECRET", "short", "AUTH_SECRET: Value should have at least 32 items"),
        ("AUTH_LEEWAY", "-1", "AUTH_LEEWAY: Input should be greater than or equal to 0"),
        ("AUTH_JWKS_REFETCH", "7200", "AUTH_JWKS_REFETCH: Input should be less than or equal"),
    ],
)
def test_a_bad_value_is_explained_naming_the_variable_and_the_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, said: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as refused:
        ChatSettings.from_env()
    assert said in str(refused.value)
    assert f"(got {value!r})" in str(refused.value)


def test_a_bad_value_stops_the_start_with_that_explanation_and_no_traceback() -> None:
    """What the explanation above becomes at a start: the process stops, saying it (one
    process for all the values: a start costs seconds of imports)."""
    result = run_chat({"CHAT_HISTORY_SIZE": "lots", "AUTH_MODE": "closed"})

    assert result.returncode != 0
    assert "CHAT_HISTORY_SIZE: Input should be a valid integer" in result.stderr
    assert "(got 'lots')" in result.stderr
    assert "AUTH_MODE: Input should be 'open' or 'token' (got 'closed')" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_variables_with_the_prefix_are_reported_at_start(tmp_path: Path) -> None:
    service = start_chat(tmp_path, {"CHAT_RATE_PER_SECONDS": "9"})
    service.stop()
    assert "CHAT_RATE_PER_SECONDS is not a chat setting and is ignored" in service.log()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9100")
    monkeypatch.setenv("CHAT_RATE_BURST", "3")
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://a.example, https://b.example:8443")
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("TRUSTED_PROXIES", "172.28.0.2, 10.1.0.0/16")
    settings = ChatSettings.from_env()
    assert settings.port == 9100
    assert settings.rate_burst == 3
    assert settings.allowed_origins == ("https://a.example", "https://b.example:8443")
    assert settings.redis_url is None
    assert settings.trusted_proxies == ("172.28.0.2", "10.1.0.0/16")


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if (
            key.startswith("CHAT_")
            or key
            in (
                "PORT",
                "HOST",
                "REDIS_URL",
                "ALLOWED_ORIGINS",
                "TRUSTED_PROXIES",
            )
            or key.startswith("AUTH_")
        ):
            monkeypatch.delenv(key)
    settings = ChatSettings.from_env()
    assert (settings.host, settings.port, settings.redis_url) == ("127.0.0.1", 8001, None)
    assert (settings.rate_per_second, settings.rate_burst, settings.history_size) == (5, 10, 50)
    assert settings.replica_ttl == 15
    assert settings.trusted_proxies == ()  # nobody's X-Forwarded-For is believed
    assert (settings.auth_mode, settings.auth_secret, settings.auth_jwks_url) == (
        "open",
        None,
        None,
    )
    assert (settings.auth_audience, settings.auth_leeway, settings.auth_jwks_refetch) == (
        "switchboard",
        30,
        30,
    )
    with pytest.raises(ValidationError):
        ChatSettings(rate_burst=0)


def test_redis_through_sentinels_waits_for_a_replica_by_default() -> None:
    """The sentinel form of REDIS_URL: acked writes wait for one replica unless told otherwise;
    one Redis has none to wait for. A password never reaches the log."""
    sentinels = "redis+sentinel://:secret@s1:26379,s2:26379,s3:26379/0/switchboard"
    assert ChatSettings(redis_url=sentinels).wait_replicas == 1
    assert ChatSettings(redis_url=sentinels, redis_wait_replicas=0).wait_replicas == 0
    assert ChatSettings(redis_url="redis://r:6379/0").wait_replicas == 0
    assert shown(sentinels) == "redis+sentinel://:***@s1:26379,s2:26379,s3:26379/0/switchboard"
    assert shown("redis://user:secret@r:6379/0") == "redis://user:***@r:6379/0"
    assert shown("redis://r:6379/0") == "redis://r:6379/0"
