# SPDX-License-Identifier: MIT
"""The package's public names: all present, none private, the promised ones there."""

from __future__ import annotations

import pytest

import echo_actors

pytestmark = pytest.mark.timeout(30)

PROMISED = [
    "Action",
    "Signature",
    "Plan",
    "Sequence",
    "Site",
    "Life",
    "Fate",
    "Production",
    "EchoError",
    "LicenseError",
    "ExecutionError",
    "RoutingError",
    "CancellationError",
    "ValidationError",
    "Context",
    "Times",
    "ActionFuture",
]


def test_every_name_in_all_exists() -> None:
    """Each name listed in __all__ is an attribute of the package."""
    missing = [name for name in echo_actors.__all__ if not hasattr(echo_actors, name)]
    assert missing == []


def test_all_has_no_duplicates() -> None:
    """No name is listed twice in __all__."""
    assert len(set(echo_actors.__all__)) == len(echo_actors.__all__)


def test_no_private_name_in_all() -> None:
    """No name with a leading underscore is exported, except __version__."""
    private = [n for n in echo_actors.__all__ if n.startswith("_") and n != "__version__"]
    assert private == []


@pytest.mark.parametrize("name", PROMISED)
def test_promised_name_is_exported(name: str) -> None:
    """The names the issue promises are in __all__ and importable."""
    assert name in echo_actors.__all__
    assert getattr(echo_actors, name) is not None


def test_error_kinds_derive_from_echo_error() -> None:
    """Every error kind is an EchoError; only execution failures are worth retrying."""
    kinds = [
        echo_actors.LicenseError,
        echo_actors.ExecutionError,
        echo_actors.RoutingError,
        echo_actors.CancellationError,
        echo_actors.ValidationError,
        echo_actors.DecodeError,
        echo_actors.ActionTimeoutError,
        echo_actors.CrashError,
    ]
    assert all(issubclass(kind, echo_actors.EchoError) for kind in kinds)
    retryable = {kind.__name__ for kind in kinds if kind.retryable}
    assert retryable == {"ExecutionError", "ActionTimeoutError", "CrashError"}


def test_every_error_kind_names_its_class_back() -> None:
    """``error_class`` inverts ``error_kind`` for every EchoError (a stored outcome carries
    the kind across processes); an unknown kind reads as an ExecutionError."""
    from echo_actors import errors  # noqa: PLC0415

    classes = [getattr(errors, name) for name in errors.__all__ if name.endswith("Error")]
    for cls in classes:
        assert errors.error_class(errors.error_kind(cls("x"))) is cls
    assert errors.error_class("no-such-kind") is errors.ExecutionError


def test_star_import_matches_all() -> None:
    """`from echo_actors import *` binds exactly the names in __all__."""
    namespace: dict[str, object] = {}
    exec("from echo_actors import *", namespace)
    namespace.pop("__builtins__", None)
    assert set(namespace) == set(echo_actors.__all__)


def test_version_is_a_string() -> None:
    """__version__ is a non-empty string."""
    assert isinstance(echo_actors.__version__, str) and echo_actors.__version__
