"""The signalling service's settings say clearly what is wrong with them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.harness import ROOT, SERVICE_PREFIXES, STARTUP


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
def test_bad_settings_stop_the_start_with_a_clear_message(env: dict[str, str], said: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_PREFIXES)}
    result = subprocess.run(
        [sys.executable, "-m", "signalling_service"],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=STARTUP,  # it exits at once, after its imports: slow on a cold, busy machine
    )
    assert result.returncode != 0
    assert said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr
