"""What a cursor or remote-control client may send, as pure functions: each returns the value
to use or raises :class:`switchboard.errors.InputError`."""

from __future__ import annotations

import math
import re
from typing import Any

from switchboard.errors import InputError

BUTTON_PATTERN = re.compile(r"[a-z0-9_-]{1,16}")
#: The secrets the service hands out (a pairing link's secret, a session) are
#: ``secrets.token_urlsafe(16)``, 22 characters of base64url; this leaves room for longer ones.
SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: A typed code: 8 letters, with whatever spaces or dashes a person puts between them.
CODE_TYPED_MAX = 32
#: Positions are sent to 1/10000 of the viewport: a tenth of a pixel on a 1000 px screen.
PRECISION = 4


def position(value: Any) -> tuple[float, float]:
    """``{x, y}``, finite numbers, clamped to [0, 1]; anything else is refused."""
    if not isinstance(value, dict) or set(value) != {"x", "y"}:
        raise InputError("bad_position", "update takes one object {x, y}, each from 0 to 1.")
    coordinates = []
    for axis in ("x", "y"):
        number = value[axis]
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise InputError("bad_position", f"{axis} must be a number from 0 to 1.")
        if not math.isfinite(number):
            raise InputError("bad_position", f"{axis} must be a finite number.")
        coordinates.append(round(min(1.0, max(0.0, float(number))), PRECISION))
    return coordinates[0], coordinates[1]


def press(value: Any) -> dict[str, Any]:
    """A controller's button, pressed or released: ``{button, down}``."""
    if (
        not isinstance(value, dict)
        or set(value) != {"button", "down"}
        or not isinstance(value["button"], str)
        or not BUTTON_PATTERN.fullmatch(value["button"])
        or not isinstance(value["down"], bool)
    ):
        raise InputError(
            "bad_press", "press takes {button: 1 to 16 of a-z 0-9 _ -, down: true or false}."
        )
    return {"button": value["button"], "down": value["down"]}


def orientation(value: Any) -> dict[str, Any]:
    """A phone's orientation, ``{alpha, beta, gamma}``: finite degrees or null each."""
    if not isinstance(value, dict) or set(value) != {"alpha", "beta", "gamma"}:
        raise InputError("bad_orientation", "orientation takes {alpha, beta, gamma}.")
    for angle in value.values():
        if angle is not None and (
            isinstance(angle, bool)
            or not isinstance(angle, int | float)
            or not math.isfinite(angle)
        ):
            raise InputError("bad_orientation", "Each angle is a finite number or null.")
    return {key: value[key] for key in ("alpha", "beta", "gamma")}


def _secret(value: Any, code: str, message: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not SECRET_PATTERN.fullmatch(value):
        raise InputError(code, message)
    return value


def session_secret(value: Any) -> str | None:
    """``auth.session``: a session secret the service gave, or nothing (absent or null)."""
    return _secret(
        value,
        "bad_session",
        "auth.session must be the session secret the service gave: 1 to 64 of A-Z a-z 0-9 _ -.",
    )


def pairing_secret(value: Any) -> str | None:
    """``auth.pair``: the secret of a pairing link (its ``#pair=``), or nothing (absent or
    null)."""
    return _secret(
        value,
        "bad_pair",
        "auth.pair must be the secret of a pairing link (its #pair=): 1 to 64 of A-Z a-z 0-9 _ -.",
    )


def pairing_code(value: Any) -> str | None:
    """``auth.code``: a code as a person typed it, or nothing (absent or null). Only its type and
    size are checked here: a code that cannot be right is a wrong code, counted as one."""
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= CODE_TYPED_MAX:
        raise InputError(
            "bad_code",
            f"auth.code must be the code shown on the screen: 1 to {CODE_TYPED_MAX} characters.",
        )
    return value
