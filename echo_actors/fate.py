# SPDX-License-Identifier: MIT
"""Fate: the typed configuration of a Sequence (Echo's Fate; ``End`` is ``max_attempts``)."""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from echo_actors.action import CHAIN_CEILING, MAX_CHAIN
from echo_actors.plan import RetryPolicy
from echo_actors.runtime import RUNTIMES

__all__ = ["DISCIPLINES", "Fate"]

DISCIPLINES = ("steal", "fifo")
"""The queue disciplines (``Fate.discipline``): per-Site queues with stealing, or one FIFO."""

_ENV_PREFIX = "ECHO_"


class Fate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Settings with defaults; load them with :meth:`load` from TOML and ``ECHO_*``.

    - ``max_attempts`` (Echo's End): attempts before an action is dead-lettered.
    - ``backoff_base``/``backoff_cap``/``backoff_jitter``: retry delays (see RetryPolicy).
    - ``sites``: number of Site actors; ``runtime``: ``"thread"``, ``"gevent"`` or ``"simulation"``.
    - ``mailbox_window``: most actions a Site holds ahead in its mailbox
      (bigger: fewer messages per action; what has not started can still be
      stolen by an idle Site).
    - ``steal``: whether idle Sites take work queued for busy ones.
    - ``discipline``: how waiting actions reach Sites. ``"steal"`` (default):
      each Site has its own queue, new work goes to the shortest, idle Sites
      steal (``mailbox_window`` and ``steal`` apply). ``"fifo"``: one shared
      queue, any free Site takes the oldest waiting action (a Site holds one
      action at a time; ``mailbox_window`` and ``steal`` are not used; a
      ``key`` no longer picks a Site, ``ordered`` keys stay in order). See the
      simulation guide for the trade-offs.
    - ``seed``: seeds the runtime's random streams (retry jitter, the
      dispatcher's sampling, ``runtime.random(name)``, a simulation's ids)
      when the Sequence makes its runtime by name; ``None``: unseeded (the
      simulation runtime then uses 0). A runtime object passed to the
      Sequence keeps its own seed. ``ECHO_SEED`` sets it through :meth:`load`.
    - ``max_restarts``/``restart_within``: the restart intensity of the
      supervisor over the Sites and the dispatcher (more crashes than that in
      that many seconds and it gives up).
    - ``license_keys``: HMAC keys; the first signs, any verifies. Empty: no check.
    - ``max_action_bytes``: largest encoded action accepted from outside.
    - ``action_events``: log a debug event at each step of every action
      (off by default: logging must not cost more than a no-op action).
    - ``max_dead_letters``: dead letters a Sequence keeps in memory; older ones
      are dropped (and counted) beyond it. Durable productions keep their own.
    - ``max_delay``: longest ``delay`` (seconds) an admitted action may ask for.
    - ``max_chain``: most actions in one ``next`` chain, for actions built in
      Python and decoded alike (at most ``CHAIN_CEILING``).
    - ``result_ttl``: seconds a durable production keeps a result asked for
      (``RedisProduction.submit``) once it is written.
    - ``max_result_bytes``: largest encoded result kept; a bigger one is an
      ``encode`` error its submitter sees.
    - ``dedup_window``: seconds a durable production remembers that an action
      id completed, so that a redelivered copy is acknowledged without running
      again (0: off).
    - ``max_async_in_flight``: most coroutines of ``async def`` functions a
      Sequence's event loop runs at once (0: no cap); the others wait their
      turn there, unstarted, without blocking the loop or a Site.
    """

    max_attempts: int = 3
    backoff_base: float = 0.05
    backoff_cap: float = 30.0
    backoff_jitter: float = 0.1
    sites: int = 4
    runtime: str = "thread"
    mailbox_window: int = 32
    steal: bool = True
    discipline: str = "steal"
    seed: int | None = None
    max_restarts: int = 100
    restart_within: float = 10.0
    license_keys: tuple[str, ...] = ()
    max_action_bytes: int = 1 << 20
    action_events: bool = False
    max_dead_letters: int = 10_000
    max_delay: float = 30 * 86400.0
    max_chain: int = MAX_CHAIN
    result_ttl: float = 86400.0
    max_result_bytes: int = 1 << 20
    dedup_window: float = 0.0
    max_async_in_flight: int = 0

    def __post_init__(self) -> None:
        if self.sites < 1:
            raise ValueError("sites must be >= 1")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {self.runtime!r}")
        if self.discipline not in DISCIPLINES:
            raise ValueError(
                f"discipline must be one of {', '.join(DISCIPLINES)}, not {self.discipline!r}"
            )
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, not {self.seed!r}")
        if self.mailbox_window < 1:
            raise ValueError("mailbox_window must be >= 1")
        if self.max_action_bytes < 1:
            raise ValueError("max_action_bytes must be >= 1")
        if self.max_dead_letters < 0:
            raise ValueError("max_dead_letters must be >= 0")
        if not (0 < self.max_delay < math.inf):
            raise ValueError("max_delay must be a finite number of seconds > 0")
        if not 1 <= self.max_chain <= CHAIN_CEILING:
            raise ValueError(f"max_chain must be between 1 and {CHAIN_CEILING}")
        if not (0 < self.result_ttl < math.inf):
            raise ValueError("result_ttl must be a finite number of seconds > 0")
        if self.max_result_bytes < 1:
            raise ValueError("max_result_bytes must be >= 1")
        if not (0 <= self.dedup_window < math.inf):
            raise ValueError("dedup_window must be a finite number of seconds >= 0")
        if self.max_async_in_flight < 0:
            raise ValueError("max_async_in_flight must be >= 0 (0: no cap)")
        self.retry_policy()  # validates the backoff settings

    def retry_policy(self) -> RetryPolicy:
        """The default retry policy these settings describe."""
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base=self.backoff_base,
            cap=self.backoff_cap,
            jitter=self.backoff_jitter,
        )

    def replace(self, **changes: Any) -> Fate:
        """A copy with some settings changed (validated)."""
        return msgspec.convert({**msgspec.structs.asdict(self), **changes}, Fate)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Fate:
        """Defaults, then the TOML file at ``path``, then ``ECHO_*`` variables, then overrides.

        In the file, settings sit at the top level or under ``[echo]``. In the
        environment, ``ECHO_MAX_ATTEMPTS=5`` sets ``max_attempts``; lists are
        comma-separated (``ECHO_LICENSE_KEYS=new,old``).

        Raises:
            ValueError: unknown setting, wrong type or invalid value, naming it.
        """
        values: dict[str, Any] = {}
        origin: dict[str, str] = {}  # setting -> where it came from, for error messages
        if path is not None:
            table = _read_toml(Path(path))
            values.update(table)
            origin.update(dict.fromkeys(table, str(path)))
        environ = os.environ if env is None else env
        fields = set(cls.__struct_fields__)
        for name, raw in environ.items():
            if not name.startswith(_ENV_PREFIX):
                continue
            field = name[len(_ENV_PREFIX) :].lower()
            if field in fields:
                values[field] = raw.split(",") if field == "license_keys" and raw else raw
                origin[field] = f"{name}={raw!r}"
        values.update(overrides)
        for name in overrides:  # the caller knows what it passed
            origin.pop(name, None)
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid Fate: {_located(str(exc), origin)}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    """The settings table of a Fate file (top level or ``[echo]``); errors name the file."""
    with path.open("rb") as file:
        try:
            data = tomllib.load(file)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
    table = data.get("echo", data)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: 'echo' must be a table of settings")
    return table


def _located(message: str, origin: Mapping[str, str]) -> str:
    """``message`` prefixed with where the setting it is about came from (file or variable)."""
    named = re.search(r"\$\.(\w+)|unknown field `(\w+)`", message)
    if named is not None:
        settings = [named.group(1) or named.group(2)]
    else:  # a range check (``sites must be >= 1``) names the setting in its text
        settings = [s for s in origin if re.search(rf"\b{s}\b", message)]
    where = [origin[s] for s in settings if s in origin]
    return f"{', '.join(where)}: {message}" if where else message
