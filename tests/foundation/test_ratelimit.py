"""The token bucket every service spends events from: what a refused client is told."""

from __future__ import annotations

import pytest
from switchboard.errors import InputError
from switchboard.ratelimit import TokenBucket, spend

from switchboard import ratelimit


def test_a_refusal_never_says_retry_after_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # The clock is ours: 0.9995 of a token has come back, so the next one is 25 us away.
    now = [100.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now[0])
    bucket = TokenBucket(rate=20, burst=1)
    assert bucket.take()
    now[0] += 0.9995 / 20
    with pytest.raises(InputError) as refused:
        spend(bucket)
    assert refused.value.code == "rate_limited"
    # Rounded up to 0.01 s: a client that waits what it is told is let through.
    assert refused.value.details["retry_after"] == 0.01
    now[0] += refused.value.details["retry_after"]
    spend(bucket)
