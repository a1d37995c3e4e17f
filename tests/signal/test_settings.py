"""The signalling service's settings say clearly what is wrong with them."""

from __future__ import annotations

import pytest
from signalling_service.settings import SignalSettings

from tests.harness import settings_refusal


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"TURN_URLS": "turn:127.0.0.1:3478"}, "TURN_URLS is set but TURN_SECRET is not"),
        ({"TURN_URLS": "http://turn.example.org", "TURN_SECRET": "s3cret"}, "is not a TURN URL"),
        ({"STUN_URLS": "stun.example.org:3478"}, "is not a STUN URL"),
        ({"SIGNAL_ICE_TRANSPORT_POLICY": "relay"}, "needs a TURN server (TURN_URLS)"),
        ({"TURN_TTL": "3600"}, "TURN_TTL: Input should be less than or equal to 600"),
        ({"SIGNAL_ICE_TRANSPORT_POLICY": "none"}, "SIGNAL_ICE_TRANSPORT_POLICY: Input should be"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], said: str
) -> None:
    refusal = settings_refusal(monkeypatch, SignalSettings, env)
    assert said in refusal
    assert "s3cret" not in refusal
