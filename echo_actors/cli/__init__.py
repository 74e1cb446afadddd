# SPDX-License-Identifier: MIT
"""The ``echo-actors`` command line, one module per command.

``run`` executes a JSON-lines file in-process; ``worker``, ``submit``,
``dead-letters`` and ``stats`` work on a Redis stream. :func:`main` is the
console script's entry point; :func:`load_plan` resolves ``MODULE:PLAN``.
"""

from echo_actors.cli._main import main
from echo_actors.cli._plans import load_plan

__all__ = ["load_plan", "main"]
