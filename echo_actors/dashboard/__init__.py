# SPDX-License-Identifier: MIT
"""A live dashboard on one local page: Sites, throughput and latency, the tree, dead letters.

    from echo_actors import dashboard
    board = dashboard.serve(sequence)        # before sequence.start(), for latencies
    print(board.url)                         # http://127.0.0.1:<port>/
    ...
    board.close()

or, for a Redis stream and its workers, ``echo-actors dashboard``. The page
needs nothing from the internet (its script and style are inline) and
updates itself by Server-Sent Events. Everything it shows from actions is
set as text, never as markup. Requeueing a dead letter from the page is a
POST that only the page itself can make (see :mod:`echo_actors.dashboard._server`).
"""

from __future__ import annotations

from typing import Any

from echo_actors.dashboard._server import Dashboard
from echo_actors.dashboard._sources import RedisSource, SequenceSource

__all__ = ["Dashboard", "serve"]


def serve(
    source: Any, port: int = 0, host: str = "127.0.0.1", *, token: str | None = None,
    allow_remote: bool = False,
) -> Dashboard:
    """Serve a dashboard of ``source`` (a Sequence or a RedisProduction) on ``host:port``.

    ``port=0`` picks a free one (see ``.url``). Off loopback, pass
    ``allow_remote=True`` and a ``token``: the browser then asks for it as
    the password (any user name). Given a Sequence that has not started, it
    also times its actions (a pipeline step), for the latency chart.

    Raises:
        TypeError: ``source`` is neither a Sequence nor a RedisProduction.
        ValueError: a non-loopback ``host`` without ``allow_remote`` and a token.
    """
    from echo_actors.sequence import Sequence  # noqa: PLC0415 - no cycle at import

    if isinstance(source, Sequence):
        adapted: Any = SequenceSource(source)
    elif type(source).__name__ == "RedisProduction":
        adapted = RedisSource(source)
    else:
        raise TypeError(f"expected a Sequence or a RedisProduction, got {type(source).__name__}")
    return Dashboard(adapted, host, port, token, allow_remote)
