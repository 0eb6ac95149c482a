"""Sealed fields: AES-GCM round trips, identities that cannot be swapped, key rotation, hostile input."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios.schemas.errors import ConfigError
from aios.schemas.sealed import (
    SEALED_PREFIX,
    KeyNotAvailableError,
    KeyRing,
    SealedFieldError,
    TamperedFieldError,
    field_aad,
    is_sealed,
    sealed_kid,
    unseal_with,
)

# Fixed keys: test ids are made from them, and parallel workers (xdist) must collect the same ids.
K1, K2 = base64.b64encode(bytes(range(32))).decode(), base64.b64encode(bytes(range(32, 64))).decode()
RING = KeyRing.parse(f"k1:{K1}")
ids = st.text(max_size=40)


@given(text=st.text(max_size=2000), kind=st.sampled_from(["description", "output", "memory"]),
       project=ids, task=ids)
@settings(max_examples=200, deadline=None)
def test_a_sealed_field_opens_to_its_text_with_its_identity_only(text: str, kind: str, project: str,
                                                                 task: str) -> None:
    sealed = RING.seal(text, field_aad(kind, project, task))
    assert is_sealed(sealed) and sealed_kid(sealed) == "k1"
    assert RING.unseal(sealed, field_aad(kind, project, task)) == text
    with pytest.raises(TamperedFieldError):
        RING.unseal(sealed, field_aad(kind, project, task + "x"))
    with pytest.raises(TamperedFieldError):
        RING.unseal(sealed, field_aad("other", project, task))


def test_ids_with_separators_make_distinct_identities() -> None:
    assert field_aad("output", "a:b", "c") != field_aad("output", "a", "b:c")
    assert field_aad("output", "a/b", "c") != field_aad("output", "a", "b/c")
    sealed = RING.seal("x", field_aad("output", "a:b", "c"))
    with pytest.raises(TamperedFieldError):
        RING.unseal(sealed, field_aad("output", "a", "b:c"))


def test_the_same_text_seals_differently_each_time() -> None:
    aad = field_aad("output", "p", "t")
    assert RING.seal("same", aad) != RING.seal("same", aad)


def test_any_altered_byte_is_refused() -> None:
    aad = field_aad("output", "p", "t")
    sealed = RING.seal("the quarterly numbers", aad)
    body = sealed.rsplit(":", 1)[1]
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    for i in range(len(raw)):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        forged = sealed.rsplit(":", 1)[0] + ":" + base64.urlsafe_b64encode(bytes(flipped)).decode().rstrip("=")
        with pytest.raises(TamperedFieldError):
            RING.unseal(forged, aad)


def test_rotation_new_key_first_old_still_opens_then_retired() -> None:
    aad = field_aad("memory", "p", "turn:p:t:1")
    old = KeyRing.parse(f"k1:{K1}").seal("before rotation", aad)
    rotated = KeyRing.parse(f"k2:{K2},k1:{K1}")
    assert rotated.primary == "k2" and rotated.unseal(old, aad) == "before rotation"
    new = rotated.seal("after rotation", aad)
    assert sealed_kid(new) == "k2"
    retired = KeyRing.parse(f"k2:{K2}")
    assert retired.unseal(new, aad) == "after rotation"
    with pytest.raises(KeyNotAvailableError) as caught:
        retired.unseal(old, aad)
    assert caught.value.kid == "k1" and "'k1'" in str(caught.value) and "AIOS_ENCRYPTION_KEY" in str(caught.value)


def test_a_process_without_a_key_ring_says_so_and_passes_plain_text() -> None:
    sealed = RING.seal("secret", field_aad("output", "p", "t"))
    with pytest.raises(KeyNotAvailableError, match="no AIOS_ENCRYPTION_KEY"):
        unseal_with(None, sealed, field_aad("output", "p", "t"))
    assert unseal_with(None, "plain", b"anything") == "plain"
    assert RING.unseal("plain", b"anything") == "plain"


@pytest.mark.parametrize(("spec", "problem"), [
    ("", "empty"),
    (" , ", "empty"),
    ("nokey", "<id>:<base64 key>"),
    (f"bad id:{K1}", "<id>:<base64 key>"),
    ("k:not base64!", "not base64"),
    (f"k:{base64.b64encode(b'short').decode()}", "5 bytes"),
    (f"k:{K1},k:{K2}", "appears twice"),
])
def test_a_bad_key_ring_names_the_variable_and_the_problem(spec: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="AIOS_ENCRYPTION_KEY") as caught:
        KeyRing.parse(spec)
    assert problem in str(caught.value)


def test_key_sizes_and_url_safe_base64_are_accepted() -> None:
    for size in (16, 24, 32):
        key = base64.urlsafe_b64encode(bytes(range(size))).decode().rstrip("=")
        ring = KeyRing.parse(f"k:{key}")
        assert ring.unseal(ring.seal("x", b"a"), b"a") == "x"


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_hostile_values_that_look_sealed_are_refused_with_a_typed_error(tail: str) -> None:
    value = SEALED_PREFIX + tail
    try:
        RING.unseal(value, b"aad")
    except SealedFieldError:
        pass  # the only error a reader ever sees
