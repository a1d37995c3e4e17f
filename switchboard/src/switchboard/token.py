"""Mint a token for local use, signed with ``AUTH_SECRET`` (HS256), as an operator's backend
would (docs/auth.md)::

    AUTH_SECRET=... python -m switchboard.token --sub ann --name Ann \\
        --room chat:team-* --room signal:private-call --app remote --ttl 3600

It prints the token. The services check it with the same ``AUTH_SECRET``, ``AUTH_AUDIENCE`` and
``AUTH_ISSUER``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import jwt

from switchboard.auth import APP_GRANTS, ROOM_GRANTS

DEFAULT_TTL = 3600


def mint(
    secret: str,
    *,
    sub: str,
    name: str | None = None,
    rooms: dict[str, list[str]] | None = None,
    apps: tuple[str, ...] = (),
    ttl: float = DEFAULT_TTL,
    audience: str = "switchboard",
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    """A token for ``sub``, valid ``ttl`` seconds from ``now``, granting ``rooms`` (per service)
    and ``apps``."""
    issued = int(time.time() if now is None else now)
    grants: dict[str, Any] = {
        service: list(patterns) for service, patterns in (rooms or {}).items()
    }
    grants.update({app: True for app in apps})
    claims: dict[str, Any] = {
        "sub": sub,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl),
        "grants": grants,
    }
    if name is not None:
        claims["name"] = name
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")


def room_grant(value: str) -> tuple[str, str]:
    service, colon, pattern = value.partition(":")
    if not colon or service not in ROOM_GRANTS or not pattern:
        raise argparse.ArgumentTypeError(
            f"{value!r}: say SERVICE:ROOM with SERVICE one of {', '.join(ROOM_GRANTS)} "
            "(ROOM a name, or a prefix ending in *)"
        )
    return service, pattern


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m switchboard.token",
        description="Print a token signed with AUTH_SECRET (HS256), for local use.",
    )
    parser.add_argument("--sub", required=True, help="who the token is for (a user id)")
    parser.add_argument("--name", help="the name shown for them")
    parser.add_argument(
        "--room",
        type=room_grant,
        action="append",
        default=[],
        metavar="SERVICE:ROOM",
        help="a room it may enter: chat:lobby, cursors:*, signal:private-call-*; repeatable",
    )
    parser.add_argument(
        "--app", action="append", default=[], choices=APP_GRANTS, help="an app it may use"
    )
    parser.add_argument("--ttl", type=float, default=DEFAULT_TTL, help="seconds it is valid")
    args = parser.parse_args(argv)
    secret = os.environ.get("AUTH_SECRET", "")
    if len(secret) < 32:
        sys.stderr.write("set AUTH_SECRET (at least 32 characters), as the services have it\n")
        return 2
    rooms: dict[str, list[str]] = {}
    for service, pattern in args.room:
        rooms.setdefault(service, []).append(pattern)
    token = mint(
        secret,
        sub=args.sub,
        name=args.name,
        rooms=rooms,
        apps=tuple(args.app),
        ttl=args.ttl,
        audience=os.environ.get("AUTH_AUDIENCE") or "switchboard",
        issuer=os.environ.get("AUTH_ISSUER") or None,
    )
    sys.stdout.write(token + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
