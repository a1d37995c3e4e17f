"""coturn as deployed (turn/turnserver.conf, which docker compose mounts and `make cluster`
reads) relays to no address of this host, its networks or anything private: not by IPv4, not by
IPv6, not by an IPv4 address written as IPv6 (``::ffff:127.0.0.1``, CVE-2026-27624, which
Debian's coturn before 4.9.0 lets through without an explicit rule). Asked with coturn's own
client, ``turnutils_uclient``, each address must be refused permission: 403 Forbidden IP."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from pathlib import Path

import pytest

from tests.harness import PATIENCE, TurnServer, free_udp_port

pytestmark = pytest.mark.asyncio

FORBIDDEN = "403 (Forbidden IP)"
QUOTA = "486 (Allocation Quota Reached)"
#: Peers a relay must never reach, by the family of relay they need.
DENIED_IPV4 = [
    "127.0.0.1",
    "0.0.0.0",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # a cloud's metadata service
    "100.64.0.1",
    "224.0.0.1",
]
DENIED_IPV6 = [
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",
    "2002:7f00:1::1",
    "fd00::1",
    "fe80::1",
    "ff02::1",
]


async def relay_to(
    turn: TurnServer, peer: str, clients: int = 1, user: str = "", messages: int = 1
) -> str:
    """What coturn's client prints when ``clients`` of it allocate a relay each on ``turn``
    (by the peer's family) and ask for permission to send to ``peer`` (nothing listens at its
    port): one credential for ``user`` (by default a fresh one), no RTCP, ``messages`` each.
    Where permission is given, it waits a few seconds for echoes that never come."""
    client = shutil.which("turnutils_uclient") or "/usr/bin/turnutils_uclient"
    server = "::1" if ":" in peer else "127.0.0.1"
    user = user or secrets.token_hex(4)
    process = await asyncio.create_subprocess_exec(
        client,
        *("-c", "-n", str(messages), "-m", str(clients), "-W", turn.secret, "-u", user),
        *("-e", peer, "-r", str(free_udp_port()), "-p", str(turn.port), server),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(PATIENCE):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return output.decode(errors="replace")


async def test_the_deployed_relay_reaches_no_private_loopback_or_mapped_address_and_is_capped(
    log_dir: Path,
) -> None:
    deployed = TurnServer(log_dir, secrets.token_hex(16), peers=[], ipv6=True)
    # The same, with the tests' one allowance: proof that a permitted peer looks otherwise.
    testing = TurnServer(log_dir, secrets.token_hex(16), ipv6=True)
    try:
        peers = DENIED_IPV4 + DENIED_IPV6
        # All at once: a refusal comes at once, a permitted relay waits for echoes.
        allowed, under_quota, over_quota, *outputs = await asyncio.gather(
            relay_to(testing, "127.0.0.1"),
            # One credential (a call's) holds at most user-quota (12) relays at once; each
            # client of uclient allocates two (the ends it sends between).
            relay_to(testing, "127.0.0.1", clients=6, user="ann", messages=0),
            relay_to(testing, "127.0.0.1", clients=7, user="bob", messages=0),
            *(relay_to(deployed, peer) for peer in peers),
        )
        assert FORBIDDEN not in allowed and "tot_send_msgs=1" in allowed, allowed
        assert QUOTA not in under_quota and FORBIDDEN not in under_quota, under_quota
        assert QUOTA in over_quota, over_quota
        let_through = {
            peer: output[-400:]
            for peer, output in zip(peers, outputs, strict=True)
            if FORBIDDEN not in output
        }
        assert not let_through, let_through
    finally:
        deployed.stop()
        testing.stop()
