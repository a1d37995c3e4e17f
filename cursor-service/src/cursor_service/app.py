"""The cursor service: shared cursors (``/``) and the remote control (``/remote``).
docs/protocol.md is the contract this package keeps."""

from __future__ import annotations

from switchboard.ratelimit import MemoryLimit, RedisLimit, SharedLimit
from switchboard.service import Service

from cursor_service.board import Board, MemoryBoard, RedisBoard
from cursor_service.cursors import CursorNamespace
from cursor_service.pairing import MemoryPairings, PairingStore, RedisPairings
from cursor_service.remote import RemoteNamespace
from cursor_service.settings import CursorSettings


def create_service(settings: CursorSettings | None = None) -> Service:
    """Build the cursor service from ``settings`` (read from the environment when omitted)."""
    settings = settings or CursorSettings.from_env()
    service = Service(settings)
    board: Board = service.store(
        memory=MemoryBoard, redis=lambda redis: RedisBoard(redis, service.replica)
    )
    # A desktop's liveness is its replica's, which the board's heartbeat keeps.
    pairings: PairingStore = service.store(
        memory=MemoryPairings,
        redis=lambda redis: RedisPairings(
            redis, replica_id=service.replica.id, replica_prefix=RedisBoard.prefix
        ),
    )
    per_minute = settings.code_attempts
    attempts: SharedLimit = service.store(
        memory=lambda: MemoryLimit(per_minute / 60, per_minute),
        redis=lambda redis: RedisLimit(redis, "remote:attempts:", per_minute / 60, per_minute),
    )
    cursors = CursorNamespace(service, board, settings)
    service.add_component(cursors)
    service.sio.register_namespace(cursors)
    remote = RemoteNamespace(service, settings, pairings, attempts)
    service.add_component(remote)
    service.sio.register_namespace(remote)
    return service
