# SPDX-License-Identifier: MIT
"""Context: what a plan function can ask for (its action, the runtime's clock, Life's cache).

A function asks by annotating one parameter with :class:`Context`::

    def serve(content: dict, ctx: Context) -> str:
        ctx.sleep(ctx.random("service").expovariate(1.0))
        return f"{ctx.action.id} served at {ctx.monotonic()}"

The plan finds that parameter once, at ``build()``; the Site then passes a
Context by keyword on every call. Functions that do not ask get only their
content, and pay nothing.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from echo_actors.action import Action

if TYPE_CHECKING:
    from echo_actors.life import Life
    from echo_actors.runtime import Runtime

__all__ = ["Context"]


class Context:
    """The action being run and its Sequence's runtime and Life, for one call.

    ``sleep``/``monotonic`` are the runtime's (virtual seconds on the
    simulation runtime); ``random(name)`` is the Sequence's generator for
    ``name``, made once from ``runtime.random(name)`` (seeded by ``Fate.seed``
    or the simulation's seed) and shared by every call; ``cache_get`` /
    ``cache_set`` are Life's cache. In an ``async def`` function, await
    ``asyncio.sleep`` rather than calling :meth:`sleep`, which blocks.
    """

    __slots__ = ("_streams", "action", "life", "runtime", "site")

    def __init__(
        self, action: Action, runtime: Runtime, life: Life, streams: dict[str, random.Random],
        site: int = 0,
    ) -> None:
        self.action = action
        self.runtime = runtime
        self.life = life
        self.site = site
        """The index of the Site running the action."""
        self._streams = streams

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the runtime's clock (virtual under simulation)."""
        self.runtime.sleep(seconds)

    def monotonic(self) -> float:
        """The runtime's clock, in seconds (virtual under simulation)."""
        return self.runtime.monotonic()

    def random(self, name: str = "") -> random.Random:
        """The Sequence's generator for ``name`` (the same object on every call)."""
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams.setdefault(name, self.runtime.random(name))
        return stream

    def cache_get(self, key: Any, default: Any = None) -> Any:
        """Life's cache: the value at ``key``, or ``default``."""
        return self.life.cache_get(key, default)

    def cache_set(self, key: Any, value: Any) -> None:
        """Life's cache: store ``value`` at ``key``."""
        self.life.cache_set(key, value)

    def __repr__(self) -> str:
        return f"<Context {self.action.name} {self.action.id} site={self.site}>"
