"""The chat service under another ASGI server or websocket implementation, for comparing them
on our workload (bench/versus_node.py's ``ours-*`` modes; issue 17). The service is built as
``python -m chat_service`` builds it, from the same environment (HOST, PORT, CHAT_*, ...).

    python bench/serve_asgi.py uvicorn-sansio    # uvicorn + websockets' sans-I/O, no wire
    python bench/serve_asgi.py uvicorn-websockets
    python bench/serve_asgi.py uvicorn-wsproto
    python bench/serve_asgi.py granian

What ``python -m chat_service`` runs (uvicorn, websockets' sans-I/O protocol with the wire of
switchboard/fanout.py) is the ``ours`` mode itself. Without the wire, python-engineio's own
websocket path serves every connection (a writer task and a queue per connection).
"""

from __future__ import annotations

import sys

from chat_service.app import create_service
from chat_service.settings import ChatSettings
from switchboard.runner import load_settings, tune_garbage_collector, uvicorn_options

UVICORN_WS = {
    "uvicorn-sansio": "websockets-sansio",
    "uvicorn-websockets": "websockets",
    "uvicorn-wsproto": "wsproto",
}


def main() -> None:
    server = sys.argv[1] if len(sys.argv) > 1 else ""
    settings = load_settings(ChatSettings)
    service = create_service(settings)  # type: ignore[arg-type]
    tune_garbage_collector()
    if server in UVICORN_WS:
        import uvicorn

        options = uvicorn_options(service.max_message_bytes)
        options["ws"] = UVICORN_WS[server]
        uvicorn.run(service.asgi, host=settings.host, port=settings.port, **options)
    elif server == "granian":
        import uvloop
        from granian.constants import Interfaces
        from granian.server.embed import Server

        embedded = Server(
            service.asgi,
            address=settings.host,
            port=settings.port,
            interface=Interfaces.ASGI,
            websockets=True,
            backlog=2048,
            log_enabled=False,
        )
        uvloop.run(embedded.serve())
    else:
        sys.exit(f"usage: serve_asgi.py {{{','.join([*UVICORN_WS, 'granian'])}}}")


if __name__ == "__main__":
    main()
