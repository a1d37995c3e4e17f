"""How a cursor looks to the others in its room: a colour and a pattern no one else in the room
has while the looks last, and a name no one else in the room has (issue 16).

A room's members hold *slots*, 0, 1, 2, ...: each newcomer takes the lowest slot nobody in the
room holds, and gives it back when it leaves. A slot is a look: the first ``len(PALETTE)`` are
the palette's colours, plain; the next as many the same colours with a ring around the arrow's
tip, then with an outlined label, then with a striped one. Past ``len(PALETTE) *
len(PATTERNS)`` people looks repeat, and their names still tell them apart.

A name asked for that someone in the room already shows (compared case-folded) is shown with the
lowest free number after it: a second ``Ann`` is ``Ann (2)``. Nobody loses a name they hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: Told apart by people with the common colour-vision deficiencies in its first pairs, and each
#: carrying its label's text (white, or dark on the four light ones: see web/cursors/cursors.js,
#: inkFor) at a contrast of at least 4.5:1. The arrow has a white outline and a shadow, so it
#: stands out on the page's light and dark backgrounds alike.
PALETTE = (
    "#1f5fd6",  # blue
    "#e07000",  # orange (dark text)
    "#1a7f37",  # green
    "#c2188f",  # magenta
    "#d4a000",  # gold (dark text)
    "#8a3fd1",  # purple
    "#0aa0d8",  # sky (dark text)
    "#d1312b",  # red
    "#00797e",  # teal
    "#8b5a2b",  # brown
)
#: What tells apart two people of the same colour (web/cursors/cursors.css draws them).
PATTERNS = ("solid", "ring", "outline", "striped")


def name_key(name: str) -> str:
    """What two shown names must differ in: case, after NFKC (names are NFKC already)."""
    return name.casefold()


def numbered(name: str, number: int) -> str:
    """``name`` as shown when others in the room already show it: ``Ann (2)``."""
    return f"{name} ({number})"


@dataclass(frozen=True, slots=True)
class Look:
    #: The member's place among the room's looks (see the module's docstring).
    slot: int
    #: The name shown ("" for someone who gave none: "Anonymous" on screen, never numbered).
    name: str
    #: ``name_key(name)``; "" without a name.
    key: str

    @property
    def color(self) -> str:
        return PALETTE[self.slot % len(PALETTE)]

    @property
    def pattern(self) -> str:
        return PATTERNS[self.slot // len(PALETTE) % len(PATTERNS)]


def choose(taken: Iterable[Look], name: str) -> Look:
    """The look of a newcomer asking for ``name`` ("" for none) in a room whose members hold
    ``taken``: the lowest free slot, and the name, numbered when someone shows it already.
    RedisBoard's script does the same in Redis (board.py, _ENTER)."""
    slots = set()
    keys = set()
    for look in taken:
        slots.add(look.slot)
        if look.key:
            keys.add(look.key)
    slot = 0
    while slot in slots:
        slot += 1
    key = name_key(name) if name else ""
    if key in keys:
        number = 2
        while numbered(key, number) in keys:
            number += 1
        name, key = numbered(name, number), numbered(key, number)
    return Look(slot, name, key)
