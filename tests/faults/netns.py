"""A network namespace of a test's own (issue 13, scenario 7): a replica runs inside it, joined
to the root namespace by a veth pair with link-local addresses, and the test cuts the link
between it and Redis silently (packets dropped on the wire, both ways: no reset, no error, no
interface down), as a broken switch would, while its clients still reach it.

The drop is an nftables table of the namespace's own, hooked to its end of the veth (egress:
what the replica sends; ingress: what comes back): nothing of the root namespace's firewall
is touched. netem (``tc qdisc ... netem loss 100%``) would do as well, but kernels built
without it are common (this project's machines are), while nf_tables is everywhere.

Everything is made with iproute2's ``ip`` and ``nft`` (Debian's iproute2 and nftables,
installed by scripts/system-deps.sh), as root; everything is removed on leaving
:func:`own_namespace`, whatever happened.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

#: The table the cut is made of, inside the namespace.
CUT_TABLE = "cut"


def run(*argv: str, stdin: str | None = None) -> str:
    """Run a command of iproute2 or nftables; its output, or an error with what it said."""
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def tools() -> None:
    """Fail at once, saying what to do, when this machine cannot make a namespace."""
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None and shutil.which(f"/usr/sbin/{tool}") is None:
            raise RuntimeError(f"{tool} is missing: run `make system-deps` (as root: {package})")


def in_use() -> tuple[list[ipaddress.IPv4Address], list[ipaddress.IPv4Network]]:
    """The root namespace's IPv4 addresses, and its networks (of addresses and of routes in
    every table) narrower than a /16: a test's /30 must hold none of the first and overlap
    none of the second. Broader routes (a default route, a whole 169.254.0.0/16 on a LAN
    interface) lose to a /30 only for its four addresses, which nothing here uses."""
    addresses: list[ipaddress.IPv4Address] = []
    networks: list[ipaddress.IPv4Network] = []
    for link in json.loads(run("ip", "-j", "-4", "addr", "show")):
        for info in link.get("addr_info", []):
            addresses.append(ipaddress.IPv4Address(info["local"]))
            networks.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", False))
    for route in json.loads(run("ip", "-j", "-4", "route", "show", "table", "all")):
        with contextlib.suppress(ValueError):  # "default", and the like
            networks.append(ipaddress.IPv4Network(route["dst"], strict=False))
    return addresses, [network for network in networks if network.prefixlen > 16]


def free_link() -> ipaddress.IPv4Network:
    """A link-local /30 that nothing on this machine uses (169.254.0.0/16 is never routed;
    its first and last /24, and cloud metadata's 169.254.169.0/24, are left alone)."""
    addresses, networks = in_use()
    for _ in range(200):
        third = random.choice([n for n in range(1, 255) if n != 169])
        candidate = ipaddress.IPv4Network(f"169.254.{third}.{random.randrange(0, 256, 4)}/30")
        if not any(address in candidate for address in addresses) and not any(
            candidate.overlaps(network) for network in networks
        ):
            return candidate
    raise RuntimeError("no free link-local /30 found for a test's network namespace")


@dataclass
class Namespace:
    """A network namespace (``sbtest-<hex>``) and its veth pair: :attr:`host_address` on the
    root namespace's end, :attr:`address` on the namespace's end."""

    name: str
    #: The veth's ends: in the root namespace, and inside this one.
    host_side: str
    inside: str
    host_address: str
    address: str

    def wrapper(self) -> list[str]:
        """The command prefix that runs a program inside (``ip netns exec`` execs it: the
        program keeps the PID it was started with)."""
        return ["ip", "netns", "exec", self.name]

    def inside_run(self, *argv: str, stdin: str | None = None) -> str:
        return run(*self.wrapper(), *argv, stdin=stdin)

    def cut(self, address: str, port: int) -> None:
        """Drop every TCP packet between this namespace and ``address:port``, both ways, on
        the namespace's end of the veth: its programs see no error, only silence."""
        self.inside_run(
            "nft",
            "-f",
            "-",
            stdin=f"""
table netdev {CUT_TABLE} {{
  chain outgoing {{
    type filter hook egress device "{self.inside}" priority 0; policy accept;
    ip daddr {address} tcp dport {port} counter drop
  }}
  chain incoming {{
    type filter hook ingress device "{self.inside}" priority 0; policy accept;
    ip saddr {address} tcp sport {port} counter drop
  }}
}}
""",
        )

    def dropped(self) -> int:
        """Packets the cut has dropped so far (0 when there is no cut)."""
        try:
            listing = self.inside_run("nft", "-j", "list", "table", "netdev", CUT_TABLE)
        except RuntimeError:
            return 0
        return sum(
            expression["counter"]["packets"]
            for item in json.loads(listing)["nftables"]
            for expression in item.get("rule", {}).get("expr", [])
            if "counter" in expression
        )

    def mend(self) -> None:
        """Let the packets through again."""
        with contextlib.suppress(RuntimeError):  # no cut: nothing to mend
            self.inside_run("nft", "delete", "table", "netdev", CUT_TABLE)


def create() -> Namespace:
    """Make a namespace with ``lo`` up and a veth pair on a free link-local /30. What was made
    before a step failed is removed."""
    tools()
    tag = uuid.uuid4().hex[:8]
    link = free_link()
    host_address, address = (str(host) for host in link.hosts())
    namespace = Namespace(f"sbtest-{tag}", f"sb{tag}h", f"sb{tag}n", host_address, address)
    try:
        run("ip", "netns", "add", namespace.name)
    except RuntimeError as exc:
        raise RuntimeError(
            f"cannot make a network namespace ({exc}): this test runs as root (CAP_SYS_ADMIN "
            "and CAP_NET_ADMIN), as `make test` does on this project's machines"
        ) from None
    try:
        namespace.inside_run("ip", "link", "set", "lo", "up")
        run(
            "ip", "link", "add", namespace.host_side, "type", "veth",
            "peer", "name", namespace.inside, "netns", namespace.name,
        )  # fmt: skip
        run("ip", "addr", "add", f"{host_address}/30", "dev", namespace.host_side)
        run("ip", "link", "set", namespace.host_side, "up")
        namespace.inside_run("ip", "addr", "add", f"{address}/30", "dev", namespace.inside)
        namespace.inside_run("ip", "link", "set", namespace.inside, "up")
    except BaseException:
        remove(namespace)
        raise
    return namespace


def remove(namespace: Namespace) -> None:
    """Remove the cut, the veth pair (both ends go together) and the namespace; what is
    already gone is skipped. Processes still inside keep it alive until they end: stop them
    first."""
    namespace.mend()
    with contextlib.suppress(RuntimeError):
        run("ip", "link", "del", namespace.host_side)
    with contextlib.suppress(RuntimeError):
        run("ip", "netns", "del", namespace.name)


@contextlib.contextmanager
def own_namespace() -> Iterator[Namespace]:
    namespace = create()
    try:
        yield namespace
    finally:
        remove(namespace)
