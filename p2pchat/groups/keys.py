"""When to replace our sender key for a group, and whom to give it (PROTOCOL.md §15.2).
Sans-IO: the membership state and whom our key was made for, a plan out.

A sender key is made for the group's members as they are when it is made, and its key is
exported once, at its first message: each of those members gets exactly that export (owed
until delivered, :mod:`p2pchat.groups.store`), and nobody else ever gets it. Whenever the
members change (someone joins, leaves or is removed), our next message starts a new key for
the members then: one who joins opens nothing sent before it joined, one who is gone opens
nothing sent after. The same after ``ROTATE_AFTER_MESSAGES`` messages or ``ROTATE_AFTER_S``
seconds (:func:`p2pchat.ratchet.megolm.needs_new_key`), bounding what one stolen key opens.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pchat.ratchet.megolm import SenderKey, needs_new_key


@dataclass(frozen=True)
class KeyPlan:
    new_key: bool
    """Seal nothing more with the current key: make a new one first."""
    share_to: frozenset[str]
    """Members a new key is for (besides us): each is owed its export."""


def plan_keys(
    key: SenderKey | None,
    made_for: frozenset[str],
    members: frozenset[str],
    me: str,
    now: float,
) -> KeyPlan:
    """What to do before our next message, given our key (``None``: none yet), the members
    it was made for, and the group's members now."""
    if me not in members:
        return KeyPlan(False, frozenset())  # we left or were removed: we send nothing more
    if (
        key is None
        or made_for != members
        or needs_new_key(key, now, members_left=bool(made_for - members))
    ):
        return KeyPlan(True, members - {me})
    return KeyPlan(False, frozenset())
