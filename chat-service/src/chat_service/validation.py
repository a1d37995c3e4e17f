"""The rules for what a chat client may send (issue 2), as pure functions.

Each raises :class:`switchboard.service.InputError` with a code a program can test and a
message a person can read.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from switchboard.service import InputError

NAME_MAX = 32
TEXT_MAX = 2000
ROOM_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_ROOM = "lobby"
MESSAGE_ID_PATTERN = re.compile(r"[0-9]{1,15}-[0-9]{1,10}")
# Cc are the C0/C1 controls; Zl and Zp are line and paragraph separators, which would let a
# name or message break the layout of other people's screens.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def one_argument(args: tuple[Any, ...]) -> Any:
    if len(args) != 1:
        raise InputError("bad_arguments", f"expected exactly one argument, got {len(args)}")
    return args[0]


def _has_control(text: str, allowed: str = "") -> bool:
    return any(unicodedata.category(ch) in _CONTROL_CATEGORIES and ch not in allowed for ch in text)


def nickname(value: Any) -> str:
    """A nickname: a string of 1 to 32 characters after trimming and NFC, no controls."""
    if not isinstance(value, str):
        raise InputError("invalid_type", "A name must be a string.")
    name = unicodedata.normalize("NFC", value).strip()
    if not name:
        raise InputError("empty", "A name needs at least one character.")
    if len(name) > NAME_MAX:
        raise InputError("too_long", f"A name has at most {NAME_MAX} characters.")
    if _has_control(name):
        raise InputError("control_characters", "A name cannot contain control characters.")
    return name


def nickname_key(name: str) -> str:
    """What two names must differ in to be different: 'Ann' and 'ANN' are one name."""
    return name.casefold()


def message_text(value: Any) -> str:
    """A message: a string of 1 to 2000 characters after trimming; newlines and tabs allowed."""
    if not isinstance(value, str):
        raise InputError("invalid_type", "A message must be a string.")
    text = value.strip()
    if not text:
        raise InputError("empty", "A message needs at least one character.")
    if len(text) > TEXT_MAX:
        raise InputError("too_long", f"A message has at most {TEXT_MAX} characters.")
    if _has_control(text, allowed="\n\t"):
        raise InputError("control_characters", "A message cannot contain control characters.")
    return text


def room(value: Any) -> str:
    if value is None:
        return DEFAULT_ROOM
    if not isinstance(value, str) or not ROOM_PATTERN.fullmatch(value):
        raise InputError("bad_room", "A room name has 1 to 64 letters, digits, '-' or '_'.")
    return value


def message_id(value: Any) -> str | None:
    """The ``last_id`` a reconnecting client sends: a message id we gave it, or nothing."""
    if value is None:
        return None
    if not isinstance(value, str) or not MESSAGE_ID_PATTERN.fullmatch(value):
        raise InputError("bad_last_id", "last_id must be a message id such as '1700000000000-0'.")
    return value


def id_order(message_id: str) -> tuple[int, int]:
    """Message ids sort as (milliseconds, sequence), in memory as in Redis streams."""
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq)
