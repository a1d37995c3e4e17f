"""Input rules every service shares: rooms, display names, argument counts.

Each raises :class:`switchboard.errors.InputError` with a code a program can test and a
message a person can read.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from switchboard.errors import InputError

ROOM_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_ROOM = "lobby"
NAME_MAX = 32
# Cc are the C0/C1 controls; Zl and Zp are line and paragraph separators, which would let a
# name or message break the layout of other people's screens.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
#: Characters that show nothing: format characters (Cf: zero-width spaces and joiners, the
#: bidi marks, embeddings, overrides and isolates, tags, the soft hyphen) and the letters that
#: are drawn blank. In a name they make "ann" and "ann\u200b" two people, or turn text around.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def one_argument(args: tuple[Any, ...]) -> Any:
    if len(args) != 1:
        raise InputError("bad_arguments", f"expected exactly one argument, got {len(args)}")
    return args[0]


def has_control(text: str, allowed: str = "") -> bool:
    return any(unicodedata.category(ch) in _CONTROL_CATEGORIES and ch not in allowed for ch in text)


def has_invisible(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cf" or ch in _BLANK_LETTERS for ch in text)


def display_name(value: Any) -> str:
    """A name people see: a string of 1 to 32 characters after NFKC (full-width, ligatures and
    other compatibility forms become the plain letters) and trimming; no control characters,
    nothing invisible, no bidi controls."""
    if not isinstance(value, str):
        raise InputError("invalid_type", "A name must be a string.")
    name = unicodedata.normalize("NFKC", value).strip()
    if not name:
        raise InputError("empty", "A name needs at least one character.")
    if len(name) > NAME_MAX:
        raise InputError("too_long", f"A name has at most {NAME_MAX} characters.")
    if has_control(name):
        raise InputError("control_characters", "A name cannot contain control characters.")
    if has_invisible(name):
        raise InputError(
            "invisible_characters",
            "A name cannot contain invisible characters (zero-width, bidi controls, blanks).",
        )
    return name


def room(value: Any) -> str:
    if value is None:
        return DEFAULT_ROOM
    if not isinstance(value, str) or not ROOM_PATTERN.fullmatch(value):
        raise InputError("bad_room", "A room name has 1 to 64 letters, digits, '-' or '_'.")
    return value


def connect_auth(auth: Any) -> Mapping[str, Any]:
    """The ``auth`` object of a socket.io connection, or an empty one."""
    if auth is None:
        return {}
    if not isinstance(auth, dict):
        raise InputError("bad_auth", "auth must be an object.")
    return auth


def room_of(auth: Mapping[str, Any], environ: Mapping[str, Any]) -> str:
    """The room a client asks for: ``auth.room``, else the query's ``?room=``, else lobby."""
    if "room" in auth:
        return room(auth["room"])
    values = parse_qs(str(environ.get("QUERY_STRING", ""))).get("room")
    return room(values[0] if values else None)


def name_token(value: Any) -> str:
    """The token a client got with its name (chat, call), sent again on connecting to take the
    name back from a connection of its own; or nothing."""
    if value is None:
        return ""
    if not isinstance(value, str) or not 16 <= len(value) <= 64:
        raise InputError("bad_name_token", "name_token must be the token the name came with.")
    return value
