"""Group membership: a signed, versioned log of who added and removed whom (PROTOCOL.md §15.1).

Every change is an entry signed by its author's libp2p identity and chained by hash to the
entry before it. Replaying the log from its first entry gives the group's state (name,
members, admins in order of seniority) at every version, and every member replays it the
same way, so a member trusts no one's word about the group: only signatures it checked
against the state they build on. A forged entry, one whose author may not make that change,
or one that builds on a version this member does not have is refused with the reason.

Two admins changing the group at once fork the log. Every member resolves forks the same
way, whatever order the entries arrive in: of the branches that follow one entry, the one
holding the more senior author anywhere in it wins (seniority as of the entry they follow:
the group's owner, then the admins in the order they were made admins, then other members),
each branch judged by its own winning continuation; between branches equally senior, the
lower hash of the first entry. The losing branch is dropped; :class:`Replaced` lists its
entries so that their authors can make again the changes that still apply. Seniority, not a
hash, decides between authors, so a junior admin cannot win against a senior one's change by
grinding entries; and it counts anywhere in a branch, so an admin who was removed cannot undo
it by signing a change at a version before its removal where it outranked that version's
author: the branch with the removal holds the more senior admin who removed it. Entries of
branches that lost, or that follow entries not seen yet, are kept in a bounded pool and
weighed again as their branch grows; forks are weighed up to ``FORK_WINDOW`` changes back.

Sans-IO: bytes in, a checked entry or a :class:`MembershipError` out; nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

import cbor2
import nacl.bindings
import nacl.exceptions
import nacl.signing

from p2pchat import wire
from p2pchat.identity import (
    Identity,
    IdentityError,
    peer_id_from_public_key,
    public_key_from_peer_id,
)
from p2pchat.wire import FrameError, strict_cbor_decode

ENTRY_VERSION: Final = 1
SIGNING_CONTEXT: Final = b"p2pchat group membership v1\x00"
"""Prefixed to the signed body: a membership signature is never valid as any other."""
GROUP_ID_BYTES: Final = 16
HASH_BYTES: Final = 32
MAX_MEMBERS: Final = 256
MAX_ENTRIES: Final = 10_000
"""Entries in one group's log; past this, changes are refused (a new group starts afresh)."""
MAX_ENTRY_BYTES: Final = 1024
MAX_NAME_BYTES: Final = 128
NO_PREVIOUS: Final = bytes(HASH_BYTES)
"""The ``prev`` of a group's first entry."""
MAX_POOL: Final = 256
"""Entries of other branches a log keeps, to weigh against its own as they grow."""
FORK_WINDOW: Final = 64
"""Forks are weighed up to this many changes back from our head (an older fork point is
refused as out of date; an entry further ahead waits for what comes before)."""


class MembershipError(ValueError):
    """An entry that is malformed, forged, or a change its author may not make."""


class Op(Enum):
    CREATE = "create"
    ADD = "add"
    REMOVE = "remove"
    LEAVE = "leave"
    PROMOTE = "promote"
    DEMOTE = "demote"
    RENAME = "rename"


_TARGETED: Final = {Op.ADD, Op.REMOVE, Op.PROMOTE, Op.DEMOTE}
_NAMED: Final = {Op.CREATE, Op.RENAME}


@dataclass(frozen=True)
class Entry:
    """One checked change (its signature verified; whether its author may make it depends
    on the state it builds on, which :class:`MembershipLog` checks)."""

    group_id: bytes
    version: int
    prev: bytes
    """Hash of the entry this one follows (:data:`NO_PREVIOUS` for version 0)."""
    op: Op
    author: str
    target: str | None
    """The member added, removed, promoted or demoted."""
    name: str | None
    """The group's name (create, rename)."""
    at_ms: int
    """When, by the author's clock: shown to users, never used to decide anything."""
    raw: bytes = field(repr=False)
    hash: bytes = field(repr=False)


@dataclass(frozen=True)
class GroupState:
    """The group as of one version of its log."""

    group_id: bytes
    version: int
    head: bytes
    """Hash of the entry this state is the result of."""
    name: str
    members: frozenset[str]
    admins: tuple[str, ...]
    """Most senior first: ``admins[0]`` is the owner (the creator until it leaves)."""

    @property
    def owner(self) -> str | None:
        return self.admins[0] if self.admins else None

    def seniority(self, peer: str) -> int:
        """Lower is more senior: admins by rank, then every other member alike."""
        return self.admins.index(peer) if peer in self.admins else len(self.admins)


# --- encoding -------------------------------------------------------------------------------


def _sign(
    identity: Identity,
    group_id: bytes,
    version: int,
    prev: bytes,
    op: Op,
    target: str | None,
    name: str | None,
    at_ms: int,
) -> bytes:
    body: dict[str, Any] = {
        "g": group_id,
        "n": version,
        "p": prev,
        "op": op.value,
        "by": identity.public_key,
        "at": at_ms,
    }
    if target is not None:
        body["who"] = _key_of(target)
    if name is not None:
        body["name"] = name
    encoded = cbor2.dumps(body, canonical=True)
    raw = cbor2.dumps(
        {"v": ENTRY_VERSION, "body": encoded, "sig": identity.sign(SIGNING_CONTEXT + encoded)},
        canonical=True,
    )
    parse_entry(raw)  # we never sign what we would refuse
    return raw


def _key_of(peer: str) -> bytes:
    try:
        return public_key_from_peer_id(peer)
    except IdentityError as exc:
        raise MembershipError(f"bad member ID: {exc}") from None


def parse_entry(raw: bytes) -> Entry:
    """Decode one entry and verify its signature; :class:`MembershipError` says why not."""
    if len(raw) > MAX_ENTRY_BYTES:
        raise MembershipError(f"entry of {len(raw)} bytes exceeds {MAX_ENTRY_BYTES}")
    try:
        envelope = strict_cbor_decode(raw, max_depth=2)
        if not isinstance(envelope, dict) or set(envelope) != {"v", "body", "sig"}:
            raise MembershipError("an entry is a map of exactly v, body and sig")
        if type(envelope["v"]) is not int or envelope["v"] != ENTRY_VERSION:
            raise MembershipError(f"unsupported entry version {envelope['v']!r}")
        body, signature = envelope["body"], envelope["sig"]
        if not isinstance(body, bytes) or not isinstance(signature, bytes):
            raise MembershipError("an entry's body and sig are byte strings")
        fields = strict_cbor_decode(body, max_depth=1)
    except FrameError as exc:
        raise MembershipError(f"malformed entry: {exc}") from None
    # One encoding per entry: anyone could otherwise re-pack a signed entry into new bytes,
    # and so a new hash, and have it compete with itself in a fork.
    if cbor2.dumps(envelope, canonical=True) != raw or cbor2.dumps(fields, canonical=True) != body:
        raise MembershipError("the entry is not in canonical CBOR")
    if not isinstance(fields, dict) or not all(isinstance(k, str) for k in fields):
        raise MembershipError("an entry body is a map with text keys")
    try:
        op = Op(fields.get("op"))
    except ValueError:
        raise MembershipError(f"unknown change {str(fields.get('op'))[:20]!r}") from None
    expected = {"g", "n", "p", "op", "by", "at"}
    expected |= {"who"} if op in _TARGETED else set()
    expected |= {"name"} if op in _NAMED else set()
    if set(fields) != expected:
        raise MembershipError(f"a {op.value} entry has exactly {', '.join(sorted(expected))}")
    group_id, version, prev, by, at_ms = (fields[k] for k in ("g", "n", "p", "by", "at"))
    if not isinstance(group_id, bytes) or len(group_id) != GROUP_ID_BYTES:
        raise MembershipError(f"the group ID is not {GROUP_ID_BYTES} bytes")
    if not _natural(version):
        raise MembershipError("the version is not a non-negative integer")
    if not isinstance(prev, bytes) or len(prev) != HASH_BYTES:
        raise MembershipError(f"prev is not a {HASH_BYTES}-byte hash")
    if (version == 0) != (op is Op.CREATE):
        raise MembershipError("a group's first entry, and only it, creates the group")
    if version == 0 and prev != NO_PREVIOUS:
        raise MembershipError("the first entry follows no other")
    if not _natural(at_ms):
        raise MembershipError("the time is not a non-negative integer")
    author = _peer_of(by, "author")
    if len(signature) != 64:
        raise MembershipError("the signature is not 64 bytes")
    try:
        nacl.signing.VerifyKey(by).verify(SIGNING_CONTEXT + body, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        raise MembershipError("bad signature on the entry") from None
    target = _peer_of(fields["who"], "member") if op in _TARGETED else None
    name = fields.get("name")
    if op in _NAMED:
        problem = (
            wire.text_problem(name, MAX_NAME_BYTES, allow_empty=False)
            if isinstance(name, str)
            else "is not text"
        )
        if problem is not None:
            raise MembershipError(f"the group name {problem}")
    return Entry(
        group_id, version, prev, op, author, target, name, at_ms, raw, _entry_hash(body, signature)
    )


def _quick_hash(raw: bytes) -> bytes | None:
    """An entry's hash from its bytes without checking it (None if they are not an entry):
    to recognise entries we hold already, whose bytes we compare too."""
    try:
        envelope = cbor2.loads(raw)
    except Exception:  # any garbage: parse_entry says why
        return None
    if not isinstance(envelope, dict):
        return None
    body, signature = envelope.get("body"), envelope.get("sig")
    if not isinstance(body, bytes) or not isinstance(signature, bytes):
        return None
    return _entry_hash(body, signature)


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _peer_of(key: Any, what: str) -> str:
    if not isinstance(key, bytes) or len(key) != 32:
        raise MembershipError(f"the {what} is not a 32-byte Ed25519 key")
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(key):
        raise MembershipError(f"the {what} is not a valid Ed25519 key")
    return peer_id_from_public_key(key)


def _entry_hash(body: bytes, signature: bytes) -> bytes:
    """What names an entry: its signed body and the signature (Ed25519 signatures as
    libsodium checks them cannot be altered into another valid one)."""
    return hashlib.blake2b(body + signature, digest_size=HASH_BYTES).digest()


# --- the rules ------------------------------------------------------------------------------


def apply(state: GroupState | None, entry: Entry) -> GroupState:
    """The state after ``entry``, which must build on ``state`` (``None`` before the group
    exists); :class:`MembershipError` if its author may not make that change there."""
    if state is None:
        if entry.op is not Op.CREATE:
            raise MembershipError("the log does not start with the group's creation")
        assert entry.name is not None
        return GroupState(
            entry.group_id, 0, entry.hash, entry.name, frozenset({entry.author}), (entry.author,)
        )
    if entry.group_id != state.group_id:
        raise MembershipError("the entry is for another group")
    if entry.version != state.version + 1 or entry.prev != state.head:
        raise MembershipError(f"the entry does not follow version {state.version}")
    if entry.version >= MAX_ENTRIES:
        raise MembershipError(f"the group's log is full ({MAX_ENTRIES} changes)")
    by, who = entry.author, entry.target
    if by not in state.members:
        raise MembershipError(f"{_short(by)} is not a member of the group")
    members, admins, name = state.members, state.admins, state.name
    if entry.op is Op.LEAVE:
        members, admins = members - {by}, tuple(a for a in admins if a != by)
    elif by not in admins:
        raise MembershipError(f"{_short(by)} is not an admin of the group")
    elif entry.op is Op.RENAME:
        assert entry.name is not None
        name = entry.name
    elif entry.op is Op.ADD:
        assert who is not None
        if who in members:
            raise MembershipError(f"{_short(who)} is already a member")
        if len(members) >= MAX_MEMBERS:
            raise MembershipError(f"the group has the most members it may ({MAX_MEMBERS})")
        members = members | {who}
    elif entry.op is Op.REMOVE:
        assert who is not None
        if who not in members:
            raise MembershipError(f"{_short(who)} is not a member")
        if who == by:
            raise MembershipError("to remove yourself, leave the group")
        if state.seniority(who) <= state.seniority(by):
            raise MembershipError("only a more senior admin may remove an admin")
        members, admins = members - {who}, tuple(a for a in admins if a != who)
    elif entry.op in (Op.PROMOTE, Op.DEMOTE):
        assert who is not None
        if by != state.owner:
            raise MembershipError("only the group's owner makes and unmakes admins")
        if who not in members:
            raise MembershipError(f"{_short(who)} is not a member")
        if entry.op is Op.PROMOTE:
            if who in admins:
                raise MembershipError(f"{_short(who)} is already an admin")
            admins = (*admins, who)
        else:
            if who not in admins or who == by:
                raise MembershipError(f"{_short(who)} is not an admin the owner can demote")
            admins = tuple(a for a in admins if a != who)
    else:  # pragma: no cover - every Op is handled above
        raise MembershipError(f"cannot apply {entry.op.value}")
    return GroupState(state.group_id, entry.version, entry.hash, name, members, admins)


def _short(peer: str) -> str:
    return peer[-8:]


# --- the log --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Appended:
    """The entry was new and is now the head."""

    state: GroupState


@dataclass(frozen=True)
class Duplicate:
    """The log already has this entry."""


@dataclass(frozen=True)
class Replaced:
    """The entry won a fork: our entries from its version on were dropped (re-issue those
    that still apply)."""

    state: GroupState
    dropped: tuple[Entry, ...]


@dataclass(frozen=True)
class Gap:
    """The entry is ahead of our head: fetch the entries from ``need_from`` on first."""

    need_from: int


@dataclass(frozen=True)
class Refused:
    """Forged, not allowed where it builds, or the losing side of a fork."""

    reason: str


Outcome = Appended | Duplicate | Replaced | Gap | Refused


class MembershipLog:
    """One group's log, as one member holds it: entries in order, the state after each, and
    the entries it has seen on other branches (a bounded pool), against which it keeps
    checking its own branch (module doc)."""

    def __init__(self, entries: list[Entry], states: list[GroupState]) -> None:
        self._entries = entries
        self._states = states
        self._on_branch: dict[bytes, int] = {e.hash: e.version for e in entries}
        self._pool: dict[bytes, Entry] = {}
        self._children: dict[bytes, dict[bytes, Entry]] = {}
        """prev hash → the pool's entries that follow it."""
        self._ever: tuple[tuple[int, bytes], frozenset[str]] | None = None

    @classmethod
    def create(
        cls, identity: Identity, name: str, at_ms: int, group_id: bytes | None = None
    ) -> MembershipLog:
        """A new group, with ``identity`` as its owner and only member."""
        gid = group_id if group_id is not None else os.urandom(GROUP_ID_BYTES)
        entry = parse_entry(_sign(identity, gid, 0, NO_PREVIOUS, Op.CREATE, None, name, at_ms))
        return cls([entry], [apply(None, entry)])

    @classmethod
    def replay(cls, raw_entries: list[bytes]) -> MembershipLog:
        """A log from its stored entries, every one checked again."""
        if not raw_entries:
            raise MembershipError("a log has at least the group's creation")
        entries: list[Entry] = []
        states: list[GroupState] = []
        state: GroupState | None = None
        for raw in raw_entries:
            entry = parse_entry(raw)
            state = apply(state, entry)
            entries.append(entry)
            states.append(state)
        return cls(entries, states)

    @property
    def state(self) -> GroupState:
        return self._states[-1]

    @property
    def entries(self) -> tuple[Entry, ...]:
        return tuple(self._entries)

    def state_at(self, version: int) -> GroupState | None:
        """The group as of ``version`` (None if the log does not reach it)."""
        return self._states[version] if 0 <= version < len(self._states) else None

    def ever_members(self) -> frozenset[str]:
        """Everyone who was a member at some version: whose old messages may be relayed."""
        key = (len(self._entries), self.state.head)
        if self._ever is None or self._ever[0] != key:
            self._ever = (key, frozenset().union(*(s.members for s in self._states)))
        return self._ever[1]

    def since(self, version: int) -> list[bytes]:
        """The raw entries after ``version``, for a member that has up to it."""
        return [e.raw for e in self._entries[max(version + 1, 0) :]]

    def propose(
        self,
        identity: Identity,
        op: Op,
        at_ms: int,
        *,
        target: str | None = None,
        name: str | None = None,
    ) -> bytes:
        """Sign ``op`` on top of the head and append it; :class:`MembershipError` if
        ``identity`` may not make it. Returns the entry to send to the members."""
        if op is Op.CREATE:
            raise MembershipError("a group is created once, with MembershipLog.create")
        if (op in _TARGETED) != (target is not None):
            raise MembershipError(f"a {op.value} {'names' if op in _TARGETED else 'has no'} member")
        if (op in _NAMED) != (name is not None):
            raise MembershipError(f"a {op.value} {'gives' if op in _NAMED else 'has no'} name")
        state = self.state
        raw = _sign(
            identity, state.group_id, state.version + 1, state.head, op, target, name, at_ms
        )
        outcome = self.receive(raw)
        if isinstance(outcome, Refused):
            raise MembershipError(outcome.reason)
        return raw

    def receive(self, raw: bytes) -> Outcome:
        """Take an entry from another member (or our own): what became of it."""
        seen = _quick_hash(raw)
        if (
            seen is not None
            and seen in self._on_branch
            and self._entries[self._on_branch[seen]].raw == raw
        ):
            return Duplicate()  # a resent log: no signature to check again
        try:
            entry = parse_entry(raw)
        except MembershipError as exc:
            return Refused(str(exc))
        if entry.group_id != self.state.group_id:
            return Refused("the entry is for another group")
        if entry.hash in self._on_branch:
            return Duplicate()
        if entry.version == 0:
            return Refused("the group was created by another entry")
        head = self.state
        if entry.version == head.version + 1 and entry.prev == head.head:
            try:
                state = apply(head, entry)
            except MembershipError as exc:
                return Refused(str(exc))
            self._append(entry, state)
            if not self._pool:
                return Appended(self.state)
            dropped = self._resolve()  # the pool may hold what follows, or a better branch
            return Replaced(self.state, dropped) if dropped else Appended(self.state)
        if entry.hash in self._pool:
            return Refused("out of date: that change lost to another (kept aside)")
        base = max(0, head.version - FORK_WINDOW)
        if entry.version <= base:
            return Refused(
                f"out of date: version {entry.version} is more than {FORK_WINDOW} changes back"
            )
        if entry.version > head.version + FORK_WINDOW:
            return Gap(head.version + 1)
        root = self._on_branch.get(entry.prev)
        if root is not None and root == entry.version - 1:
            try:  # a fork from our branch: it must be a change its author may make there
                apply(self._states[root], entry)
            except MembershipError as exc:
                return Refused(str(exc))
        known = root is not None or entry.prev in self._pool
        self._remember(entry)
        dropped = self._resolve()
        if dropped:
            return Replaced(self.state, dropped)
        if entry.hash in self._on_branch:
            return Appended(self.state)
        if not known:
            # It follows an entry we have not seen: from further back if it is not ahead.
            return Gap(1 if entry.version <= head.version + 1 else head.version + 1)
        return Refused(
            f"out of date: version {entry.version} is already a change by a more senior member"
        )

    # --- branches -------------------------------------------------------------------------

    def _append(self, entry: Entry, state: GroupState) -> None:
        self._entries.append(entry)
        self._states.append(state)
        self._on_branch[entry.hash] = entry.version
        self._forget(entry)

    def _truncate(self, version: int) -> tuple[Entry, ...]:
        dropped = tuple(self._entries[version:])
        del self._entries[version:]
        del self._states[version:]
        for entry in dropped:
            del self._on_branch[entry.hash]
            self._remember(entry)  # it lost for now; more entries may make it win again
        return dropped

    def _remember(self, entry: Entry) -> None:
        while len(self._pool) >= MAX_POOL:
            self._forget(next(iter(self._pool.values())))
        self._pool[entry.hash] = entry
        self._children.setdefault(entry.prev, {})[entry.hash] = entry

    def _forget(self, entry: Entry) -> None:
        if self._pool.pop(entry.hash, None) is not None:
            siblings = self._children.get(entry.prev, {})
            siblings.pop(entry.hash, None)
            if not siblings:
                self._children.pop(entry.prev, None)

    def _kids(self, entry: Entry) -> list[Entry]:
        """What follows ``entry`` in what we hold: our branch's next entry and the pool's."""
        out = list(self._children.get(entry.hash, {}).values())
        on = self._on_branch.get(entry.hash)
        if on is not None and on + 1 < len(self._entries):
            out.append(self._entries[on + 1])
        return out

    def _best(self, entry: Entry, state: GroupState, depth: int) -> list[tuple[Entry, GroupState]]:
        """The winning branch after ``entry`` (whose state is ``state``) among all we hold:
        of its valid children, the one whose own winning branch holds the most senior
        author (as of ``state``), then the lowest hash; recursively, so every member that
        holds the same entries picks the same one."""
        if depth > 2 * FORK_WINDOW:
            return []
        best: list[tuple[Entry, GroupState]] = []
        best_rank: tuple[int, bytes] | None = None
        for child in self._kids(entry):
            try:
                child_state = apply(state, child)
            except MembershipError:
                continue
            branch = [(child, child_state), *self._best(child, child_state, depth + 1)]
            rank = _branch_rank(state, [e for e, _ in branch])
            if best_rank is None or rank < best_rank:
                best, best_rank = branch, rank
        return best

    def _resolve(self) -> tuple[Entry, ...]:
        """Move to the winning branch of everything we hold from ``FORK_WINDOW`` changes
        back; what we dropped from ours (the losing entries stay in the pool)."""
        base = max(0, self.state.version - FORK_WINDOW)
        best = self._best(self._entries[base], self._states[base], 0)
        wanted = [e.hash for e, _ in best]
        ours = [e.hash for e in self._entries[base + 1 :]]
        if wanted == ours[: len(wanted)] and len(wanted) == len(ours):
            return ()
        split = next(
            (i for i, (a, b) in enumerate(zip(wanted, ours, strict=False)) if a != b),
            min(len(wanted), len(ours)),
        )
        dropped = self._truncate(base + 1 + split)
        for entry, state in best[split:]:
            self._append(entry, state)
        return tuple(e for e in dropped if e.hash not in self._on_branch)


def _rank(base: GroupState, entry: Entry) -> tuple[int, bytes]:
    """Which of two entries at one version ranks first (lower): see the module doc."""
    return (base.seniority(entry.author), entry.hash)


def _branch_rank(base: GroupState, branch: list[Entry]) -> tuple[int, bytes]:
    """Which of two branches from one version wins (lower): the one with the most senior
    author anywhere in it (as of the version they both follow), then the lower hash of its
    first entry. Anywhere, so that an admin who was removed cannot undo its removal by
    forking before it: the branch with the removal holds the more senior remover."""
    return (min(base.seniority(e.author) for e in branch), branch[0].hash)
