"""What the services keep of the secrets they hand out (name tokens, pairing tokens, sessions):
a digest, so that Redis, or anyone reading it, never holds a usable secret."""

from __future__ import annotations

import hashlib


def digest(secret: str) -> str:
    """SHA-256, hex: the secrets are random and long (128 bits or more), so no salt or
    stretching is needed to keep them from being guessed back."""
    return hashlib.sha256(secret.encode()).hexdigest()
