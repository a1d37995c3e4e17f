"""The rules for what a chat client may send (issue 2), as pure functions.

Each raises :class:`switchboard.errors.InputError` with a code a program can test and a
message a person can read.
"""

from __future__ import annotations

import re
from typing import Any

import icu
from switchboard.auth import Identity
from switchboard.errors import InputError
from switchboard.validation import display_name, has_control

TEXT_MAX = 2000
MESSAGE_ID_PATTERN = re.compile(r"[0-9]{1,15}-[0-9]{1,10}")
_SPOOF = icu.SpoofChecker()


def nickname(value: Any) -> str:
    """A nickname follows the rules of every display name; uniqueness is the store's job."""
    return display_name(value)


def signed_in_name(identity: Identity) -> str:
    """The name a signed-in user has in chat: its token's ``name``, else its ``sub`` when that
    is a valid name (``alice``), else none: ``name_required``."""
    name = identity.shown_name
    if name is None:
        raise InputError(
            "name_required",
            "Chat shows people by name: this token has no name claim and its sub is not a "
            "name (1 to 32 visible characters).",
        )
    return name


def nickname_key(name: str) -> str:
    """What two names must differ in to be different: their case-folded UTS #39 skeletons
    (ICU's), so that 'Ann' and 'ANN' are one name, and so are 'ann' and '\\u0430nn' (with
    a Cyrillic a), 'rn' and 'm', 'l' and '1'."""
    return str(_SPOOF.getSkeleton(0, name.casefold())).casefold()


def message_text(value: Any) -> str:
    """A message: a string of 1 to 2000 characters after trimming; newlines and tabs allowed."""
    if not isinstance(value, str):
        raise InputError("invalid_type", "A message must be a string.")
    text = value.strip()
    if not text:
        raise InputError("empty", "A message needs at least one character.")
    if len(text) > TEXT_MAX:
        raise InputError("too_long", f"A message has at most {TEXT_MAX} characters.")
    if has_control(text, allowed="\n\t"):
        raise InputError("control_characters", "A message cannot contain control characters.")
    return text


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
