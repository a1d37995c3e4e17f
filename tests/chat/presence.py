"""Who is in the room as a client holds it, from the ``users`` and ``presence`` it received
(docs/protocol.md, "Members"), by the rules web/chat/chat.js follows: the newest ``users`` is
the base; a change counts when its rev is newer than the base's and than the last change of
its member; the count and whether the room is listed come from the newest event that says."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.harness import Client

KINDS = ("joined", "updated", "left")


def told(kind: str, **fields: Any) -> Callable[..., bool]:
    """For ``client.wait("presence", told("left", name="ann"))``: a diff whose ``kind`` list
    has a member with these fields."""

    def matches(diff: dict[str, Any]) -> bool:
        return any(
            all(member.get(k) == v for k, v in fields.items()) for member in diff.get(kind, [])
        )

    return matches


def changes(client: Client, kind: str, **fields: Any) -> list[dict[str, Any]]:
    """Every member of ``kind`` with these fields in the diffs ``client`` received."""
    return [
        member
        for (diff,) in client.received("presence")
        for member in diff.get(kind, [])
        if all(member.get(k) == v for k, v in fields.items())
    ]


def bare(member: dict[str, Any]) -> dict[str, Any]:
    """A member without its rev, as ``users`` lists it."""
    return {k: v for k, v in member.items() if k != "rev"}


@dataclass
class Seen:
    """The room as one client holds it."""

    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    count: int = 0
    listed: bool = True

    @property
    def names(self) -> list[str]:
        return sorted(member["name"] for member in self.members.values())


def seen(client: Client) -> Seen:
    rosters = client.received("users")
    assert rosters, "no users yet"
    base_list, base = max(rosters, key=lambda roster: roster[1]["rev"])
    room = Seen({m["id"]: m for m in base_list}, base["count"], base["listed"])
    figures = base["rev"]
    newest: dict[str, tuple[int, str, dict[str, Any]]] = {}
    for (diff,) in client.received("presence"):
        for kind in KINDS:
            for member in diff.get(kind, []):
                rev, held = member["rev"], newest.get(member["id"])
                if rev > base["rev"] and (held is None or rev > held[0]):
                    newest[member["id"]] = (rev, kind, member)
        if "rev" in diff and diff["rev"] >= figures:
            figures = diff["rev"]
            room.count = diff["count"]
            room.listed = room.listed and diff["listed"]  # listed again only by a `users`
    for member_id, (_, kind, member) in newest.items():
        if kind == "left":
            room.members.pop(member_id, None)
        else:
            room.members[member_id] = bare(member)
    return room
