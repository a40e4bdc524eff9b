"""Safety numbers: 60 digits two friends compare (in person, or on a call they trust) to be
sure each holds the other's real key, not one an attacker slipped in when they exchanged IDs
or friend codes (PROTOCOL.md §13.3). Sans-IO.

Both sides compute the same number from the two Ed25519 public keys (the keys the two IDs
embed). Each half is derived from one key through ``ITERATIONS`` rounds of SHA-512, so that
finding another key whose half matches takes as long as it has to: about 10^30 tries.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Final

from p2pchat.identity import public_key_from_peer_id

VERSION_CONTEXT: Final = b"p2pchat safety number v1\x00"
ITERATIONS: Final = 5200
GROUPS: Final = 12
"""Groups of five digits: six per key."""


def half(public_key: bytes) -> str:
    """The 30 digits one Ed25519 public key contributes."""
    if len(public_key) != 32:
        raise ValueError("Ed25519 public keys are 32 bytes")
    digest = hashlib.sha512(VERSION_CONTEXT + public_key).digest()
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + public_key).digest()
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5)
    )


@lru_cache(maxsize=256)
def safety_number(me: str, friend: str) -> str:
    """The safety number of two IDs: 12 groups of 5 digits separated by spaces, the same
    whichever side computes it (the halves in ascending order). Raises
    :class:`p2pchat.identity.IdentityError` for an ID that is not one."""
    halves = sorted((half(public_key_from_peer_id(me)), half(public_key_from_peer_id(friend))))
    digits = "".join(halves)
    return " ".join(digits[i : i + 5] for i in range(0, len(digits), 5))
