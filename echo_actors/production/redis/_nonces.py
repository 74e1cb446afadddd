# SPDX-License-Identifier: MIT
"""License nonces claimed in Redis, shared by every worker."""

from __future__ import annotations

import time
from typing import Any

import redis

from echo_actors.nonces import DEFAULT_WINDOW, NonceStoreError
from echo_actors.production.redis._scripts import CLAIM
from echo_actors.production.redis._wire import _text

__all__ = ["RedisNonceStore"]


class RedisNonceStore:
    """License nonces recorded in Redis (SET NX with a TTL), shared by every worker.

    ``prefix`` is shared by every stream by default, so a license used on one
    stream cannot be replayed on another. Any Redis error is raised as a
    :class:`NonceStoreError`: the action is refused (fail closed).
    """

    def __init__(
        self, client: Any, prefix: str = "echo_actors:nonce:", window: float = DEFAULT_WINDOW
    ) -> None:
        if not window > 0:
            raise ValueError("window must be > 0 seconds")
        self.window = window
        self.prefix = prefix
        self._client = client
        self._claim = client.register_script(CLAIM)

    def claim(self, nonce: str, admission: str, expires_at: float) -> bool:
        """Record ``nonce`` for ``admission`` until the expiry plus the window."""
        keep_ms = max(1, int((expires_at + self.window - time.time()) * 1000))
        try:
            return bool(self._claim(keys=[self.prefix + nonce], args=[admission, keep_ms]))
        except redis.RedisError as exc:
                raise NonceStoreError(f"Redis: {exc}") from exc

    def holds(self, nonce: str, admission: str) -> bool:
        """Whether ``nonce`` is recorded for ``admission``."""
        try:
            held = self._client.get(self.prefix + nonce)
        except redis.RedisError as exc:
            raise NonceStoreError(f"Redis: {exc}") from exc
        return held is not None and _text(held) == admission
