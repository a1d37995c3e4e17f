"""orjson behind the ``json`` interface python-socketio and python-engineio expect.

Both libraries call ``dumps(obj, separators=...)`` and ``loads(text)``; orjson is several times
faster than the standard module and always compact, so the keyword arguments are not needed.
"""

from __future__ import annotations

from typing import Any

import orjson


def dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj).decode()


def loads(text: str | bytes, **_: Any) -> Any:
    return orjson.loads(text)


JSONDecodeError = orjson.JSONDecodeError
