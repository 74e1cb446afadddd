# SPDX-License-Identifier: MIT
"""Licenses: forged, tampered, re-aimed, expired and replayed actions are refused."""

from __future__ import annotations

import threading
import time

import pytest
from logs import capture_events

from echo_actors import Action, LicenseError, sign, verify
from echo_actors.admission import admit
from echo_actors.license import DEFAULT_TTL, key_id
from echo_actors.nonces import MemoryNonceStore, NonceStoreError

pytestmark = pytest.mark.timeout(30)

NOW = 1_800_000_000.0
"""A fixed clock for expiry checks (licenses are made and checked at given times)."""


def _chain() -> Action:
    return Action("First", {"a": 1}, next=Action("Second", {"b": 2}, next=Action("Third")))


def _signed(key: str = "k", **kwargs: float) -> Action:
    return sign(_chain(), key, now=NOW, **kwargs)


def test_signed_chain_verifies_and_every_link_has_its_own_nonce() -> None:
    """sign puts a version-1 license with key id, expiry and nonce on every chained action."""
    action = _signed()
    verify(action, ["k"], now=NOW)
    licenses = [link.license or "" for link in action.chain()]
    parts = [text.split(".") for text in licenses]
    assert [p[0] for p in parts] == ["1", "1", "1"]
    assert {p[1] for p in parts} == {key_id("k")}
    assert {int(p[2]) for p in parts} == {int(NOW + DEFAULT_TTL)}
    assert len({p[3] for p in parts}) == 3
    for link in action.chain()[1:]:
        verify(link, ["k"], now=NOW)  # each chained action verifies when it runs


def test_signing_does_not_leak_the_key() -> None:
    """Neither the key nor its id in clear appears in the license beyond the derived id."""
    action = sign(Action("A"), "a-secret-key", now=NOW)
    assert "a-secret-key" not in (action.license or "")
    assert key_id("a-secret-key") != key_id("another-key")


@pytest.mark.parametrize(
    "change",
    [
        {"content": {"a": 2}},
        {"metadata": {"m": 1}},
        {"delay": 5.0},
        {"hooks": ("audit",)},
        {"after": ("log",)},
        {"key": "k2"},
        {"id": "another-id"},
    ],
    ids=["content", "metadata", "delay", "hooks", "after", "key", "id"],
)
def test_tampered_fields_are_refused(change: dict[str, object]) -> None:
    """Changing any field a sender controls breaks the license."""
    with pytest.raises(LicenseError, match="does not verify"):
        verify(_signed().replace(**change), ["k"], now=NOW)


def test_re_aimed_action_is_refused() -> None:
    """The same license on an action renamed to another function is refused."""
    with pytest.raises(LicenseError, match="does not verify"):
        verify(_signed().replace(name="DeleteEverything"), ["k"], now=NOW)


def _with_second(action: Action, **change: object) -> Action:
    second = action.next
    assert second is not None
    return action.replace(next=second.replace(**change))


@pytest.mark.parametrize("field", ["content", "name", "license"])
def test_tampered_next_is_refused(field: str) -> None:
    """A chained action's content, name or license changed under a signed head is refused."""
    action = _signed()
    other = sign(Action("Other", "x", next=Action("Third")), "k", now=NOW)
    replacement = {"content": {"b": 3}, "name": "Other", "license": other.license}[field]
    with pytest.raises(LicenseError):
        verify(_with_second(action, **{field: replacement}), ["k"], now=NOW)


def test_a_next_swapped_for_another_signed_action_is_refused() -> None:
    """A whole validly signed action put in place of the chained one breaks the head's license."""
    action = _signed()
    intruder = sign(Action("Second", {"b": 2}, next=Action("Third")), "k", now=NOW)
    with pytest.raises(LicenseError, match=r"First.*does not verify"):
        verify(action.replace(next=intruder), ["k"], now=NOW)


def test_dropping_or_adding_next_is_refused() -> None:
    """Cutting the chain or hanging an action on it is refused."""
    action = _signed()
    with pytest.raises(LicenseError):
        verify(action.replace(next=None), ["k"], now=NOW)
    lone = sign(Action("Lone"), "k", now=NOW)
    with pytest.raises(LicenseError):
        verify(lone.replace(next=sign(Action("Extra"), "k", now=NOW)), ["k"], now=NOW)


def test_unsigned_next_under_a_signed_head_is_refused() -> None:
    """A chained action stripped of its license is refused (the head covered it)."""
    action = _signed()
    with pytest.raises(LicenseError, match=r"First.*does not verify"):
        verify(_with_second(action, license=None), ["k"], now=NOW)


def test_unsigned_action_is_refused() -> None:
    """An action without a license, where keys are configured, is refused."""
    with pytest.raises(LicenseError, match="carries no license"):
        verify(Action("A"), ["k"], now=NOW)


def test_unknown_key_id_is_refused() -> None:
    """A license made with a key not configured is refused, naming the key id."""
    with pytest.raises(LicenseError, match=f"unknown key.*{key_id('other')}"):
        verify(_signed("other"), ["k"], now=NOW)


def test_rotated_key_accepted() -> None:
    """With keys (new, old), actions signed with either verify; a third key does not."""
    for key in ("new", "old"):
        verify(_signed(key), ["new", "old"], now=NOW)
    with pytest.raises(LicenseError):
        verify(_signed("older"), ["new", "old"], now=NOW)


def test_expired_refused() -> None:
    """A license past its expiry is refused; one second before, it is fine."""
    action = _signed(expires_in=60)
    verify(action, ["k"], now=NOW + 60)
    with pytest.raises(LicenseError, match="expired"):
        verify(action, ["k"], now=NOW + 61)


@pytest.mark.parametrize(
    "license",
    [
        "0" * 64,  # the old format: a bare MAC
        "2.0123456789abcdef.1800000300.00000000000000000000000000000000." + "0" * 64,
        "1.0123456789abcdef.soon.00000000000000000000000000000000." + "0" * 64,
        "1.XYZ.1800000300.00.00",
        "1....",
        "",
        "1." + "." * 400,
    ],
    ids=["old-format", "version-2", "expiry-not-int", "short-parts", "empty-parts", "empty",
         "dots"],
)
def test_malformed_licenses_are_refused(license: str) -> None:
    """Licenses that are not version 1 or not well formed are refused, not crashed on."""
    with pytest.raises(LicenseError):
        verify(Action("A", license=license), ["k"], now=NOW)


def test_replay_within_window_refused() -> None:
    """The same signed action admitted twice: the second admission is a replay."""
    store = MemoryNonceStore()
    action = sign(Action("Pay", 100), "k")
    verify(action, ["k"], nonces=store, admission="first")
    with pytest.raises(LicenseError, match="replay"):
        verify(action, ["k"], nonces=store, admission="second")


def test_same_admission_passes_again() -> None:
    """A retry, redelivery or requeue of one admission is not a replay, even after expiry."""
    store = MemoryNonceStore()
    action = sign(Action("Pay", 100), "k", expires_in=60)
    verify(action, ["k"], nonces=store, admission="a1")
    verify(action, ["k"], nonces=store, admission="a1")
    later = time.time() + 120  # expired, but the store still holds the record for a1
    verify(action, ["k"], nonces=store, admission="a1", now=later)
    with pytest.raises(LicenseError, match="expired"):
        verify(action, ["k"], nonces=store, admission="a2", now=later)


def test_a_chained_action_sent_alone_is_a_replay() -> None:
    """Admitting the head claims every nonce of its chain: its `next` cannot run on its own."""
    store = MemoryNonceStore()
    action = sign(_chain(), "k")
    verify(action, ["k"], nonces=store, admission="head")
    assert action.next is not None
    with pytest.raises(LicenseError, match="replay"):
        verify(action.next, ["k"], nonces=store, admission="stolen")
    store = MemoryNonceStore()  # the other order: the stolen link first, then the head
    verify(action.next, ["k"], nonces=store, admission="stolen")
    with pytest.raises(LicenseError, match="replay"):
        verify(action, ["k"], nonces=store, admission="head")


def test_licenses_valid_past_the_window_are_refused() -> None:
    """A license valid for longer than the store's window would outlive its record: refused."""
    store = MemoryNonceStore(window=60)
    with pytest.raises(LicenseError, match="longer than 60 s"):
        verify(sign(Action("A"), "k", expires_in=3600), ["k"], nonces=store, admission="a")
    verify(sign(Action("A"), "k", expires_in=30), ["k"], nonces=store, admission="a")


class _BrokenStore:
    window = 3600.0

    def claim(self, nonce: str, admission: str, expires_at: float) -> bool:
        raise NonceStoreError("disk on fire")

    def holds(self, nonce: str, admission: str) -> bool:
        raise NonceStoreError("disk on fire")


def test_store_failure_refuses_and_logs() -> None:
    """A nonce that cannot be recorded: the action is refused (fail closed), the reason logged."""
    refused = pytest.raises(LicenseError, match="could not be recorded: disk on fire")
    with capture_events() as logs, refused:
        verify(sign(Action("A"), "k"), ["k"], nonces=_BrokenStore(), admission="a")
    assert [(e["event"], e["log_level"]) for e in logs] == [("nonce_not_recorded", "warning")]


def test_full_store_fails_closed() -> None:
    """A store at capacity refuses new nonces rather than forget old ones."""
    store = MemoryNonceStore(capacity=2)
    for n in range(2):
        verify(sign(Action("A", n), "k"), ["k"], nonces=store, admission=str(n))
    with pytest.raises(LicenseError, match="full"):
        verify(sign(Action("A", 3), "k"), ["k"], nonces=store, admission="3")


def test_store_forgets_records_past_their_time() -> None:
    """Records are dropped once the license's expiry plus the window has passed."""
    store = MemoryNonceStore(window=10)
    assert store.claim("old", "a", expires_at=time.time() - 11)
    assert store.claim("new", "a", expires_at=time.time() + 5)
    assert len(store) == 1 and store.holds("new", "a") and not store.holds("old", "a")


def test_store_is_thread_safe() -> None:
    """Eight threads claiming one nonce for eight admissions: exactly one wins."""
    store = MemoryNonceStore()
    barrier = threading.Barrier(8)
    wins: list[bool] = []
    lock = threading.Lock()

    def claim(n: int) -> None:
        barrier.wait(timeout=10)
        won = store.claim("nonce", f"admission-{n}", time.time() + 60)
        with lock:
            wins.append(won)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(wins) == [False] * 7 + [True]


def test_admission_reset_keeps_the_license_valid() -> None:
    """attempt and created_at are not signed: an admitted action still verifies."""
    action = sign(_chain(), "k").replace(attempt=7, created_at=1.0)
    admitted = admit(action)
    assert [link.attempt for link in admitted.chain()] == [1, 1, 1]
    verify(admitted, ["k"])


def test_content_that_cannot_be_canonical_is_a_license_error() -> None:
    """Content with an int of 2**64 or non-string keys cannot be signed: LicenseError."""
    for content in ({"n": 2**64}, {1: "int key"}):
        with pytest.raises(LicenseError, match="cannot be signed"):
            sign(Action("A", content), "k")


def test_a_long_chain_signs_and_verifies_without_recursion() -> None:
    """Signing and verifying a chain of 10,000 actions is iterative: no RecursionError."""
    action = Action("Z")
    for n in range(10_000):
        action = Action("A", n, next=action)
    signed = sign(action, "k")
    verify(signed, ["k"])


def test_bad_sign_arguments() -> None:
    """An empty key or a non-positive expiry is a ValueError."""
    with pytest.raises(ValueError):
        sign(Action("A"), "")
    for expires_in in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            sign(Action("A"), "k", expires_in=expires_in)


def test_nonce_check_needs_an_admission() -> None:
    """Passing a store without saying which admission is a programming error."""
    with pytest.raises(ValueError, match="admission"):
        verify(sign(Action("A"), "k"), ["k"], nonces=MemoryNonceStore())

