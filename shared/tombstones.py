"""What an erasure leaves behind names nobody: the key of both services' tombstones (chat_erasures,
conversation_erasures)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from flask import current_app


def user_hash(user_id: str, config: Mapping[str, Any] | None = None) -> str:
    """The tombstone's key: HMAC-SHA256 of the user id under ERASURE_HASH_KEY (else JWT_SECRET), hex.

    Keyed, so nobody holding the database alone can confirm a guessed id (user ids are short numbers:
    a plain sha256 is reversed by trying them all); recomputable by an operator holding the key, to prove
    that a given id was erased. The "erasure:" prefix keeps it apart from any JWT signature under the same
    secret (a JWS signing input never holds a colon).
    """
    config = current_app.config if config is None else config
    key = config.get("ERASURE_HASH_KEY") or config.get("JWT_SECRET")
    if not key:
        raise RuntimeError("set ERASURE_HASH_KEY (or JWT_SECRET): the user id hash needs a key")
    return hmac.new(key.encode(), b"erasure:" + user_id.encode(), hashlib.sha256).hexdigest()
