"""Logging set-up: one line per record, with the service name as context."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if getattr(root, "_switchboard_configured", False):
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The libraries log every packet at INFO when their logger is enabled; ours stay quiet
    # unless something goes wrong.
    for noisy in ("socketio", "engineio", "uvicorn.access", "uvicorn.error", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    root._switchboard_configured = True  # type: ignore[attr-defined]
