"""Cross-site origins are refused at the handshake (CSWSH); allowed ones get through."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import start_chat
from tests.harness import CHAT_PATH_QS, PATIENCE

pytestmark = pytest.mark.asyncio


async def handshake(url: str, origin: str | None, **headers: str) -> int:
    if origin:
        headers["Origin"] = origin
    async with httpx.AsyncClient(timeout=PATIENCE) as http:
        answer = await http.get(f"{url}{CHAT_PATH_QS}", headers=headers)
        return answer.status_code


async def test_same_origin_only_when_nothing_is_configured(tmp_path: Path) -> None:
    service = start_chat(tmp_path)
    try:
        own = f"http://127.0.0.1:{service.port}"
        assert await handshake(service.url, own) == 200
        assert await handshake(service.url, None) == 200  # not a browser: nothing to hijack
        for foreign in (
            "https://evil.example",
            "null",
            f"https://127.0.0.1:{service.port}",
            f"http://127.0.0.1:{service.port}.evil.example",
        ):
            assert await handshake(service.url, foreign) == 400, foreign
    finally:
        service.stop()


async def test_allowed_origins_are_the_only_ones(tmp_path: Path) -> None:
    service = start_chat(tmp_path, {"ALLOWED_ORIGINS": "https://chat.example,https://b.example"})
    try:
        assert await handshake(service.url, "https://chat.example") == 200
        assert await handshake(service.url, "https://b.example") == 200
        assert await handshake(service.url, "https://evil.example") == 400
        assert await handshake(service.url, f"http://127.0.0.1:{service.port}") == 400
    finally:
        service.stop()
