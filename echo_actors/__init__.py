# SPDX-License-Identifier: MIT
"""echo_actors: asynchronous action processing on pykka actors.

Define actions in a :class:`Plan`, queue them in a :class:`Production`, and let
a :class:`Sequence` of :class:`Site` actors execute them, with a dispatcher
that balances and steals work, retries with backoff, hooks and chaining held
in :class:`Life`, and dead letters for what fails for good.
"""

import logging

from pykka import Timeout

from echo_actors.action import Action
from echo_actors.context import Context
from echo_actors.dead_letter import DeadLetter
from echo_actors.dispatcher import SiteStats
from echo_actors.errors import (
    ActionTimeoutError,
    CancellationError,
    CrashError,
    DecodeError,
    EchoError,
    EncodeError,
    ExecutionError,
    LicenseError,
    RoutingError,
    ValidationError,
)
from echo_actors.fate import Fate
from echo_actors.license import sign, verify
from echo_actors.life import Life, LifeSnapshot
from echo_actors.plan import Plan, RetryPolicy, Signature
from echo_actors.production import Production
from echo_actors.runtime import ActionFuture
from echo_actors.sequence import Sequence, Stats
from echo_actors.site import Site
from echo_actors.times import Times

__version__ = "0.2.0"

# Silent unless the application configures logging (the convention of pykka and Dramatiq).
logging.getLogger("echo_actors").addHandler(logging.NullHandler())

__all__ = [
    "Action",
    "ActionFuture",
    "ActionTimeoutError",
    "CancellationError",
    "Context",
    "CrashError",
    "DeadLetter",
    "DecodeError",
    "EchoError",
    "EncodeError",
    "ExecutionError",
    "Fate",
    "LicenseError",
    "Life",
    "LifeSnapshot",
    "Plan",
    "Production",
    "RetryPolicy",
    "RoutingError",
    "Sequence",
    "Signature",
    "Site",
    "SiteStats",
    "Stats",
    "Timeout",
    "Times",
    "ValidationError",
    "__version__",
    "sign",
    "verify",
]
