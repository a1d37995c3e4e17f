"""What a cursor or remote-control client may send, as pure functions: each returns the value
to use or raises :class:`switchboard.errors.InputError`."""

from __future__ import annotations

import math
import re
from typing import Any

from switchboard.errors import InputError

BUTTON_PATTERN = re.compile(r"[a-z0-9_-]{1,16}")
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
