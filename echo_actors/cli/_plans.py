# SPDX-License-Identifier: MIT
"""Finding the Plan a ``MODULE:PLAN`` argument names, without running anything else.

PLAN must be a :class:`~echo_actors.Plan`, or a function that takes no
arguments and returns one (a *factory*). Anything else is refused by looking
at it, before any call: a function with required parameters, a class, or a
function annotated to return something other than a Plan (a script's
``main() -> None``). A factory without a return annotation is called, and
refused if what it returns is not a Plan.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from echo_actors.cli._common import CommandError
from echo_actors.plan import Plan

__all__ = ["load_plan"]


def load_plan(spec: str) -> Plan:
    """The built Plan named by ``MODULE:PLAN`` (MODULE: dotted name or ``.py`` path).

    Raises:
        CommandError: the spec is malformed, the module cannot be imported,
            or PLAN is not a Plan or a zero-argument factory of one.
    """
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(f"expected MODULE:PLAN (e.g. examples/quickstart.py:plan), got {spec!r}")
    module = _import(module_name)
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise CommandError(f"{module_name} has no attribute {attribute!r}") from None
    if not isinstance(value, Plan):
        value = _call_factory(spec, value)
    return value.build()


def _import(name: str) -> ModuleType:
    if name.endswith(".py") or os.sep in name or "/" in name:
        path = Path(name)
        if path.is_dir():
            raise CommandError(f"{path} is a directory; MODULE is a .py file or a dotted name")
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise CommandError(f"cannot import {path}: not a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules.setdefault(path.stem, module)  # dataclasses and pickling-free types look here
        _run_user_code(f"importing {path}", module_spec.loader.exec_module, module)
        return module
    if os.getcwd() not in sys.path:  # as `python -m` would: modules beside you are found
        sys.path.insert(0, os.getcwd())
    imported: ModuleType = _run_user_code(
        f"importing {name}", importlib.import_module, name, module=name
    )
    return imported


def _run_user_code(what: str, call: Any, *args: Any, module: str = "") -> Any:
    """``call(*args)``; a failure inside the user's code becomes a one-line CommandError."""
    try:
        return call(*args)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any mistake in the user's module
        missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
        if missing and module and (module == missing or module.startswith(missing + ".")):
            raise CommandError(
                f"no module named {missing!r} (MODULE is a dotted module name on the Python "
                "path, or a path to a .py file)"
            ) from None
        where = ""
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            last = frames[-1]
            where = f" ({last.filename}, line {last.lineno})"
        raise CommandError(f"{what} failed: {type(exc).__name__}: {exc}{where}") from None


def _call_factory(spec: str, value: Any) -> Plan:
    what = f"{spec} is a {type(value).__name__}"
    if isinstance(value, type):
        raise CommandError(f"{spec} is a class, not a Plan or a function returning one")
    if not callable(value):
        raise CommandError(f"{what}, not a Plan")
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):
        raise CommandError(f"{what} whose parameters cannot be inspected; "
                           "PLAN must be a Plan or a function of no arguments returning one"
                           ) from None
    required = [
        p.name for p in signature.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise CommandError(
            f"{spec} needs arguments ({', '.join(required)}); PLAN must be a Plan or a "
            "function of no arguments returning one"
        )
    returns = signature.return_annotation
    if returns is not signature.empty and not _names_plan(returns):
        shown = returns if isinstance(returns, str) else getattr(returns, "__name__", returns)
        raise CommandError(
            f"{spec} is a function returning {shown}, not a Plan (it was not called); "
            "name the Plan itself, e.g. MODULE:plan"
        )
    result = _run_user_code(f"calling {spec}", value)
    if not isinstance(result, Plan):
        raise CommandError(f"{spec}() returned a {type(result).__name__}, not a Plan")
    return result


def _names_plan(annotation: Any) -> bool:
    """Whether a return annotation says Plan (the class, or its name as a string)."""
    if isinstance(annotation, str):
        return annotation.rsplit(".", 1)[-1] == "Plan"
    return isinstance(annotation, type) and issubclass(annotation, Plan)
