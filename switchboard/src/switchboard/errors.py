"""The error a service answers a client with: a code a program reads, a message a person reads.

Plain data: modules that only validate input raise it without importing a web framework; the
namespace base (:mod:`switchboard.namespace`) turns it into an ack, an error event or a refused
connection.
"""

from __future__ import annotations

from typing import Any


class InputError(Exception):
    """A client sent something we refuse. The handler's caller turns it into an error object,
    sent as the ack and as the service's error event, never as a stack trace."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        event: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        #: The event that carries the error to the client, when not the service's default.
        self.event = event
        #: Fields a program may rely on (``retry_after``), beside the code and the message.
        self.details = details or {}

    def payload(self) -> dict[str, Any]:
        return {"ok": False, "error": self.code, "message": self.message, **self.details}
