"""Random engine.io and socket.io frames, hostile and half-valid, from a seeded generator: the
same seed makes the same frames, so a failing run can be replayed (issue 12).

What a frame may be: a binary websocket frame; text that is no packet at all; or a socket.io
packet of any type (binary ones included), to our namespace or another, with or without an
ack id (up to huge), an attachment count, and data that is valid JSON or nearly: events of the
namespace and reserved or unknown names, arguments of every JSON type, nested deep, huge and
non-finite numbers, escaped lone surrogates and control characters, cut short.
"""

from __future__ import annotations

import json
import random
from typing import Any

#: Strings that have made parsers and validators stumble elsewhere.
NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "\ud800",
    "\udfff",
    "\u202e",
    "\u200b",
    "\ufeff",
    "\U0010ffff",
    "a" * 70_000,
    "é" * 40,
    "__proto__",
    "constructor",
    "-1",
    "1e999",
    "NaN",
    "null",
    "/",
    "/remote",
    "../..",
    "%00",
    "<script>",
    "lobby",
    "btcusd",
    "echo",
]
NASTY_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    0.5,
    -0.0,
    2**53 + 1,
    10**400,
    -(10**400),
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
]


class Frames:
    """Frames for one namespace: ``events`` are the names its handlers take."""

    def __init__(self, seed: int, namespace: str, events: list[str]) -> None:
        self.random = random.Random(seed)
        self.namespace = namespace
        self.events = events

    def frame(self) -> str | bytes:
        kind = self.random.random()
        if kind < 0.04:
            return self.random.randbytes(self.random.randint(0, 300))
        text = self._noise() if kind < 0.10 else self._packet()
        # A text frame is UTF-8: a raw lone surrogate cannot be sent (escaped in JSON, it can).
        return text.encode("utf-8", "replace").decode("utf-8")

    def _noise(self) -> str:
        pick = self.random.randrange(4)
        if pick == 0:  # engine.io packets of every type, with junk
            return str(self.random.randrange(10)) + self._string()
        if pick == 1:
            depth = self.random.choice([100, 1000, 5000, 20_000])
            return "42" + "[" * depth + "]" * depth
        if pick == 2:
            return "".join(chr(self.random.randrange(32, 0x2FFF)) for _ in range(50))
        return self.random.choice(["", "4", "42", "43", "45", "2", "3", "6", "5", "40", "41"])

    def _packet(self) -> str:
        kind = self.random.choices("0123456", weights=[3, 3, 60, 10, 2, 4, 4])[0]
        head = kind
        if kind in "56" or self.random.random() < 0.02:
            head += f"{self.random.choice([0, 1, 2, 9_999_999_999])}-"
        namespace = self.namespace
        if self.random.random() < 0.1:
            namespace = self.random.choice(["/", "/remote", "/nope", "/" + "x" * 300, "//"])
        if namespace != "/":
            head += f"{namespace},"
        if kind in "2356" and self.random.random() < 0.7:
            head += str(self.random.choice([0, 1, 7, 2**31, 2**63, 10**30]))
        return head + self._data(kind)

    def _data(self, kind: str) -> str:
        if kind in "25":  # an event: [name, ...arguments]
            name: Any = self.random.choice(
                [*self.events] * 4
                + ["connect", "disconnect", "connect_error", "newListener", "nothing"]
                + [1, None, [], {}, True, self._string()]
            )
            data: Any = [name] + [self._value(3) for _ in range(self.random.randrange(4))]
        else:
            data = self._value(3)
        if self.random.random() < 0.2 and kind in "25":
            data = data[1:] if self.random.random() < 0.5 else {"event": data}
        text = json.dumps(data)  # NaN, Infinity: JSON that JavaScript's parser refuses
        if self.random.random() < 0.05:
            text = text[: self.random.randrange(len(text) + 1)]
        return text

    def _value(self, depth: int) -> Any:
        pick = self.random.randrange(8 if depth > 0 else 5)
        if pick == 0:
            return self.random.choice(NASTY_NUMBERS)
        if pick == 1:
            return self._string()
        if pick == 2:
            return self.random.choice([None, True, False])
        if pick == 3:
            return self.random.uniform(-2, 2)
        if pick == 4:
            return self._shaped()
        if pick == 5:
            return [self._value(depth - 1) for _ in range(self.random.randrange(5))]
        return {
            self._string()[:20]: self._value(depth - 1) for _ in range(self.random.randrange(5))
        }

    def _string(self) -> str:
        if self.random.random() < 0.5:
            return self.random.choice(NASTY_STRINGS)
        return "".join(
            chr(self.random.randrange(0, 0x10FFFF)) for _ in range(self.random.randrange(12))
        )

    def _shaped(self) -> Any:
        """Something close to what a handler takes, off by a little."""
        shapes: list[Any] = [
            {"x": self.random.choice(NASTY_NUMBERS), "y": 0.5},
            {"x": 0.5, "y": 0.5, "z": 1},
            {"button": self._string(), "down": self.random.choice([True, 1, None])},
            {"alpha": self.random.choice(NASTY_NUMBERS), "beta": None, "gamma": 0},
            {
                "type": self.random.choice(["offer", "answer", "candidate", "x"]),
                "sdp": self._string(),
            },
            {"candidate": self._string(), "sdpMid": self.random.choice(["0", None, 7])},
            {"room": self._string()},
            {"renegotiate": True},
        ]
        return self.random.choice(shapes)
