"""Safety numbers (p2pchat.ratchet.safety), checked against PROTOCOL.md §13.3 computed here
independently."""

from __future__ import annotations

import hashlib

import pytest

from p2pchat.identity import Identity, IdentityError, peer_id_from_public_key
from p2pchat.ratchet.safety import safety_number


def spec_half(key: bytes) -> str:
    d = hashlib.sha512(b"p2pchat safety number v1\x00" + key).digest()
    for _ in range(5200):
        d = hashlib.sha512(d + key).digest()
    return "".join(
        str(int.from_bytes(d[i : i + 5], "big") % 100000).zfill(5) for i in range(0, 30, 5)
    )


def test_the_number_is_the_documented_one_and_the_same_on_both_sides() -> None:
    a, b = Identity.generate(), Identity.generate()
    number = safety_number(a.peer_id, b.peer_id)
    assert number == safety_number(b.peer_id, a.peer_id)
    digits = "".join(sorted((spec_half(a.public_key), spec_half(b.public_key))))
    assert number.split() == [digits[i : i + 5] for i in range(0, 60, 5)]
    assert len(number.split()) == 12 and all(len(g) == 5 and g.isdigit() for g in number.split())


def test_a_different_key_gives_a_different_number() -> None:
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    assert safety_number(a.peer_id, b.peer_id) != safety_number(a.peer_id, c.peer_id)
    # One bit of one key changes its whole half.
    key = bytearray(b.public_key)
    for flip in range(256):
        key[0] ^= flip or 1
        try:
            other = peer_id_from_public_key(bytes(key))
            n1, n2 = safety_number(a.peer_id, b.peer_id), safety_number(a.peer_id, other)
        except (IdentityError, ValueError):
            key[0] ^= flip or 1
            continue  # not a valid point: no such ID
        shared = sum(x == y for x, y in zip(n1.split(), n2.split(), strict=True))
        assert shared <= 7, (n1, n2)  # the other key's six groups, and chance
        break
    else:
        pytest.fail("no valid neighbouring key found")


def test_bad_ids_are_refused() -> None:
    with pytest.raises(IdentityError):
        safety_number("12D3KooWnope", Identity.generate().peer_id)
