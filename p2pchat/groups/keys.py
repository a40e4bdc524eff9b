"""When to replace our sender key for a group, and whom to give it (PROTOCOL.md §15.2).
Sans-IO: the membership state and what we shared in, a plan out.

A member who joins gets our current key, exported at our next message: it opens what we
send from then on, nothing earlier. A member who leaves or is removed keeps whatever key it
had, so before our next message we start a new session and give it to the members who
remain only; the same after ``ROTATE_AFTER_MESSAGES`` messages or ``ROTATE_AFTER_S``
seconds (:func:`p2pchat.ratchet.megolm.needs_new_key`).
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pchat.ratchet.megolm import SenderKey, needs_new_key


@dataclass(frozen=True)
class KeyPlan:
    new_key: bool
    """Seal nothing more with the current session: start a new one first."""
    share_to: frozenset[str]
    """Members to send the (new or current) key to, sealed to each with Olm."""


def plan_keys(
    key: SenderKey | None,
    shared_with: frozenset[str],
    members: frozenset[str],
    me: str,
    now: float,
) -> KeyPlan:
    """What to do before our next message, given our key (``None``: none yet), the members
    we gave it to, and the group's members now."""
    if me not in members:
        return KeyPlan(False, frozenset())  # we left or were removed: we send nothing more
    others = members - {me}
    if key is None or needs_new_key(key, now, members_left=bool(shared_with - members)):
        return KeyPlan(True, others)
    return KeyPlan(False, others - shared_with)
