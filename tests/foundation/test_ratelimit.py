"""The token bucket every service spends events from: what a refused client is told."""

from __future__ import annotations

import pytest
from switchboard.errors import InputError
from switchboard.origins import address_key
from switchboard.ratelimit import MemoryLimit, TokenBucket, spend

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


def test_a_limit_counts_ipv4_by_address_and_ipv6_by_its_64() -> None:
    assert address_key("198.51.100.7") == "198.51.100.7"
    assert address_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert address_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2::9") == address_key("2001:db8:1:2:ffff::1")
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("unknown") == "unknown"


async def test_the_bucket_forgotten_past_the_cap_is_the_one_idle_longest() -> None:
    limit = MemoryLimit(rate=1 / 3600, burst=1, most=2)  # a token an hour: none comes back here
    assert await limit.spend("busy") == 0.0
    assert await limit.spend("idle") == 0.0
    assert await limit.spend("busy") > 0  # refused: touched last
    assert await limit.spend("new") == 0.0  # a third key: "idle" is forgotten, not "busy"
    assert await limit.spend("busy") > 0
    assert list(limit.buckets) == ["new", "busy"]
