# SPDX-License-Identifier: MIT
"""Signature and Plan: declared once, read-only once built, content converted by type."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from echo_actors import Plan, RetryPolicy, Signature, ValidationError

pytestmark = pytest.mark.timeout(30)


class Point(msgspec.Struct):
    """A content type for the conversion tests."""

    x: int
    y: int


def _identity(content: Any) -> Any:
    return content


def test_build_returns_the_plan_and_makes_it_read_only() -> None:
    """build() returns the same plan; afterwards nothing can be declared."""
    plan = Plan().with_signature(Signature("A")).with_function("A", _identity)
    assert not plan.built
    assert plan.build() is plan
    assert plan.built
    assert plan.build() is plan  # building twice is harmless
    with pytest.raises(RuntimeError):
        plan.with_signature(Signature("B"))
    with pytest.raises(RuntimeError):
        plan.with_function("A", _identity)
    assert plan.names() == ["A"] and "A" in plan and "B" not in plan


def test_function_without_signature_raises_key_error() -> None:
    """A function for an undeclared name is refused with KeyError, as in Echo."""
    with pytest.raises(KeyError, match="Missing"):
        Plan().with_function("Missing", _identity)


def test_duplicate_function_raises() -> None:
    """A second function for the same name raises ValueError."""
    plan = Plan().with_signature(Signature("A")).with_function("A", _identity)
    with pytest.raises(ValueError, match="A"):
        plan.with_function("A", _identity)


def test_duplicate_signature_raises() -> None:
    """Declaring the same name twice raises ValueError."""
    plan = Plan().with_signature(Signature("A"))
    with pytest.raises(ValueError, match="A"):
        plan.with_signature(Signature("A"))


def test_non_callable_function_raises() -> None:
    """A function that is not callable raises TypeError."""
    with pytest.raises(TypeError):
        Plan().with_signature(Signature("A")).with_function("A", 42)  # type: ignore[arg-type]


def test_with_signature_needs_a_signature() -> None:
    """with_signature refuses anything but a Signature."""
    with pytest.raises(TypeError):
        Plan().with_signature("A")  # type: ignore[arg-type]


def test_decorator_form() -> None:
    """@plan.function registers a function and returns it unchanged."""
    plan = Plan().with_signature(Signature("Double"))

    @plan.function("Double")
    def double(n: int) -> int:
        return n * 2

    @plan.function("Triple", Signature("Triple"))
    def triple(n: int) -> int:
        return n * 3

    plan.build()
    assert double(2) == 4  # still the plain function
    double_entry = plan.lookup("Double")
    triple_entry = plan.lookup("Triple")
    assert double_entry is not None and double_entry[1] is double
    assert triple_entry is not None and triple_entry[1](2) == 6


def test_decorator_without_signature_raises() -> None:
    """The decorator refuses an undeclared name like with_function does."""
    plan = Plan()
    with pytest.raises(KeyError):

        @plan.function("Nope")
        def nope(content: Any) -> Any:
            return content


def test_build_with_a_signature_lacking_a_function_raises() -> None:
    """build() refuses a declared signature that has no function, naming it."""
    plan = Plan().with_signature(Signature("A")).with_function("A", _identity)
    plan.with_signature(Signature("Orphan"))
    with pytest.raises(ValueError, match="Orphan"):
        plan.build()
    assert not plan.built


def test_lookup_does_not_consume() -> None:
    """Looking a function up twice gives the same entry both times."""
    plan = Plan().with_signature(Signature("A")).with_function("A", _identity).build()
    first = plan.lookup("A")
    second = plan.lookup("A")
    assert first is not None and second is not None
    assert first == second
    assert first[0].name == "A" and first[1] is _identity
    assert plan.lookup("Unknown") is None


def test_lookup_before_build_raises() -> None:
    """An open plan cannot be used to look functions up."""
    plan = Plan().with_signature(Signature("A")).with_function("A", _identity)
    with pytest.raises(RuntimeError):
        plan.lookup("A")


def test_signature_lookup() -> None:
    """plan.signature returns the declared signature or None."""
    signature = Signature("A", timeout=1.5, retry=RetryPolicy(max_attempts=5))
    plan = Plan().with_signature(signature).with_function("A", _identity).build()
    assert plan.signature("A") == signature
    assert plan.signature("B") is None


def test_convert_to_a_struct() -> None:
    """Content is converted to the signature's Struct type."""
    signature = Signature("Move", content_type=Point)
    assert signature.convert({"x": 1, "y": 2}) == Point(1, 2)


def test_convert_to_a_list_of_str() -> None:
    """Content is converted to list[str]."""
    signature = Signature("Names", content_type=list[str])
    assert signature.convert(["a", "b"]) == ["a", "b"]
    assert signature.convert(("a",)) == ["a"]


def test_convert_without_a_type_passes_anything() -> None:
    """Without content_type, any content is accepted unchanged."""
    content = {"any": [1, "thing"]}
    assert Signature("Any").convert(content) is content


@pytest.mark.parametrize(
    ("content_type", "content", "field"),
    [
        (Point, {"x": 1, "y": "two"}, r"\$\.y"),
        (Point, {"x": 1}, "y"),
        (list[str], ["a", 2], r"\$\[1\]"),
        (dict[str, int], {"a": "b"}, r"\$\[\.\.\.\]"),
    ],
    ids=["struct-field", "struct-missing", "list-item", "dict-value"],
)
def test_convert_error_names_the_field(content_type: Any, content: Any, field: str) -> None:
    """Content that does not fit raises ValidationError naming the offending field."""
    signature = Signature("Move", content_type=content_type)
    with pytest.raises(ValidationError, match=field) as info:
        signature.convert(content)
    assert "Move" in str(info.value)
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": ""}, TypeError),
        ({"name": 3}, TypeError),
        ({"name": "A", "timeout": 0}, ValueError),
    ],
    ids=["empty-name", "int-name", "zero-timeout"],
)
def test_invalid_signature(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """A signature needs a non-empty name and a positive timeout."""
    with pytest.raises(error):
        Signature(**kwargs)


def test_retry_policy_backoff() -> None:
    """The n-th retry waits base * 2**(n-1), capped, spread by jitter."""
    policy = RetryPolicy(max_attempts=5, base=0.1, cap=0.3, jitter=0.5)
    assert policy.backoff(1, 0.5) == pytest.approx(0.1)
    assert policy.backoff(2, 0.5) == pytest.approx(0.2)
    assert policy.backoff(3, 0.5) == pytest.approx(0.3)  # capped
    assert policy.backoff(1, 0.0) == pytest.approx(0.05)
    assert policy.backoff(1, 0.999999) == pytest.approx(0.15, rel=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base": -1.0}, {"cap": -1.0}, {"jitter": 1.5}],
    ids=["attempts-0", "negative-base", "negative-cap", "jitter-over-1"],
)
def test_invalid_retry_policy(kwargs: dict[str, Any]) -> None:
    """Nonsense retry settings are refused."""
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)
