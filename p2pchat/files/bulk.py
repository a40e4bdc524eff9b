"""Sans-IO record layer of the file data path: AEAD-sealed chunks of one file.

A data session carries, after the :class:`~p2pchat.wire.FileGet`/``FileData`` exchange, a
byte stream of *records*: a 4-byte big-endian length ``L`` and ``L`` bytes of AEAD output
(ciphertext plus a 16-byte tag). The key is fresh for every session, chosen by the receiver
and sent inside the authenticated, encrypted libp2p stream, so only the friend who holds the
file can produce records the receiver accepts, whichever path (a direct TCP connection or the
libp2p stream itself) the records travel on.

Record 0 is the *hello*: its plaintext is the transfer ID, proving on a fresh TCP connection
that the peer holds the session key before any data is read. On a direct connection the
receiver first sends a *challenge* (a fresh nonce and a proof that it holds the key, see
:func:`make_challenge`) and the hello's associated data is that nonce, so a hello captured on
one connection is worthless on another. Record ``n > 0`` carries the next
chunk of the file. The nonce is ``n`` as 12 big-endian bytes; the associated data is the
transfer ID and the chunk's file offset, so chunks cannot be replayed, reordered, moved to
another offset or spliced in from another transfer. Nothing here does I/O or touches files.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable
from typing import Final, Protocol

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

HEADER_BYTES: Final = 4
TAG_BYTES: Final = 16
MAX_CHUNK: Final = 1 << 20
"""Largest plaintext in one record (1 MiB): large enough that per-record Python costs vanish
next to the copy and crypto, small enough to bound each side's buffers."""
MAX_RECORD: Final = MAX_CHUNK + TAG_BYTES

_HEADER: Final = struct.Struct(">I")

CHALLENGE_NONCE_BYTES: Final = 16
CHALLENGE_BYTES: Final = CHALLENGE_NONCE_BYTES + 16
"""What the receiver sends first on a direct connection: nonce, then a 16-byte proof."""
_CHALLENGE_CONTEXT: Final = "p2pchat 2025 file data-port challenge v2"


class BulkError(Exception):
    """The peer's records are not acceptable; the transfer must fail (never retried)."""


class _Aead(Protocol):
    def encrypt_into(
        self, nonce: bytes, data: bytes | memoryview, associated_data: bytes | None, buf: memoryview
    ) -> int: ...

    def decrypt_into(
        self, nonce: bytes, data: bytes | memoryview, associated_data: bytes | None, buf: memoryview
    ) -> int: ...


_SUITES: Final[dict[str, Callable[[bytes], _Aead]]] = {
    "aes-256-gcm": AESGCM,
    "chacha20-poly1305": ChaCha20Poly1305,
}


def preferred_suite() -> str:
    """AES-256-GCM where the CPU has AES instructions (several GB/s), else ChaCha20-Poly1305,
    which is fast and constant-time in software."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    words = line.split(":", 1)[1].split()
                    return "aes-256-gcm" if "aes" in words else "chacha20-poly1305"
    except OSError:
        pass
    return "chacha20-poly1305"


def _nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "big")


def _ad(tid: bytes, offset: int) -> bytes:
    return tid + offset.to_bytes(8, "big")


def _challenge_proof(key: bytes, tid: bytes, nonce: bytes) -> bytes:
    # A key of its own (derived, never the AEAD key itself) for a keyed BLAKE3 hash.
    mac_key = blake3.blake3(key, derive_key_context=_CHALLENGE_CONTEXT).digest()
    return bytes(blake3.blake3(tid + nonce, key=mac_key).digest(length=16))


def make_challenge(key: bytes, tid: bytes) -> tuple[bytes, bytes]:
    """The receiver's first bytes on a new direct connection, and the nonce in them.

    Fresh per connection, so the sender's hello (bound to the nonce) cannot be replayed on
    another connection; the proof shows the sender it reached the session's receiver and
    not some other service on that port."""
    nonce = os.urandom(CHALLENGE_NONCE_BYTES)
    return nonce + _challenge_proof(key, tid, nonce), nonce


def check_challenge(key: bytes, tid: bytes, challenge: bytes) -> bytes:
    """The nonce of a receiver's challenge; :class:`BulkError` unless it proves the key."""
    if len(challenge) != CHALLENGE_BYTES:
        raise BulkError("malformed challenge")
    nonce, proof = challenge[:CHALLENGE_NONCE_BYTES], challenge[CHALLENGE_NONCE_BYTES:]
    if not hmac.compare_digest(proof, _challenge_proof(key, tid, nonce)):
        raise BulkError("the challenge does not prove the session key")
    return nonce


class RecordSealer:
    """Seals the sender's records. ``seal_into`` writes header and AEAD output into a caller
    buffer so the data path copies each chunk once."""

    def __init__(self, suite: str, key: bytes, tid: bytes, offset: int) -> None:
        self._aead = _SUITES[suite](key)
        self._key = key
        self._tid = tid
        self._counter = 0
        self.offset = offset
        """File offset of the next chunk."""

    def hello(self, binding: bytes = b"") -> bytes:
        """Record 0. ``binding``: the nonce of the receiver's challenge on a direct
        connection (empty on the libp2p stream, which is bound to the session already)."""
        if self._counter != 0:
            raise RuntimeError("hello must be the first record")
        out = bytearray(HEADER_BYTES + len(self._tid) + TAG_BYTES)
        n = self._seal(memoryview(self._tid), memoryview(out), binding)
        return bytes(out[:n])

    def answer_challenge(self, challenge: bytes) -> bytes:
        """The nonce to bind the hello to; :class:`BulkError` if the challenge is not from
        this session's receiver."""
        return check_challenge(self._key, self._tid, challenge)

    def seal_into(self, chunk: memoryview, out: memoryview) -> int:
        """Seal the next chunk into ``out``; returns the record's length on the wire."""
        if not 0 < len(chunk) <= MAX_CHUNK:
            raise ValueError("chunk must be 1 byte to MAX_CHUNK")
        if self._counter == 0:
            raise RuntimeError("send the hello first")
        n = self._seal(chunk, out, _ad(self._tid, self.offset))
        self.offset += len(chunk)
        return n

    def _seal(self, plaintext: memoryview, out: memoryview, ad: bytes) -> int:
        size = len(plaintext) + TAG_BYTES
        _HEADER.pack_into(out, 0, size)
        self._aead.encrypt_into(_nonce(self._counter), plaintext, ad, out[HEADER_BYTES:][:size])
        self._counter += 1
        return HEADER_BYTES + size


class RecordOpener:
    """Checks and opens the receiver's records, for a file of ``size`` bytes of which
    ``offset`` are already verified.

    Two ways in: the data-path thread reads a header, asks :meth:`record_length` how much to
    read, and calls :meth:`open_into`; the stream path calls :meth:`feed` with whatever bytes
    arrived. Either raises :class:`BulkError` for anything a friend's honest daemon never
    sends: a bad tag, a record past the offered size, a malformed length.
    """

    def __init__(self, suite: str, key: bytes, tid: bytes, offset: int, size: int) -> None:
        if suite not in _SUITES:
            raise BulkError(f"unknown cipher suite {suite!r}")
        if not 0 <= offset <= size:
            raise ValueError("offset outside the file")
        self._aead = _SUITES[suite](key)
        self._key = key
        self._tid = tid
        self._counter = 0
        self.offset = offset
        self.size = size
        self._buf = bytearray()

    def challenge(self) -> tuple[bytes, bytes]:
        """A fresh challenge for a new direct connection, and its nonce."""
        return make_challenge(self._key, self._tid)

    @property
    def greeted(self) -> bool:
        return self._counter > 0

    @property
    def done(self) -> bool:
        return self.greeted and self.offset == self.size

    def record_length(self, header: bytes | bytearray | memoryview) -> int:
        """The AEAD output length a header announces, checked against what may come next."""
        (length,) = _HEADER.unpack(header)
        if not self.greeted:
            if length != len(self._tid) + TAG_BYTES:
                raise BulkError("first record is not a hello")
            return int(length)
        if length <= TAG_BYTES or length > MAX_RECORD:
            raise BulkError(f"record length {length} out of range")
        if self.offset + length - TAG_BYTES > self.size:
            raise BulkError("peer sent more than the offered size")
        return int(length)

    def check_hello(self, record: bytes, binding: bytes = b"") -> None:
        """Raise :class:`BulkError` unless ``record`` (as announced by its header) is this
        session's hello, bound to ``binding`` (the connection's challenge nonce). Changes
        nothing: a connection may be tried and dropped."""
        if self.greeted:
            raise BulkError("the hello was already received")
        try:
            plaintext = self._aead_decrypt(record, binding)
        except InvalidTag:
            raise BulkError("a record failed authentication") from None
        if plaintext != self._tid:
            raise BulkError("hello names another transfer")

    def accept_hello(self, record: bytes, binding: bytes = b"") -> None:
        """Take ``record`` as the hello (checked as by :meth:`check_hello`)."""
        self.check_hello(record, binding)
        self._counter = 1

    def _aead_decrypt(self, record: bytes, binding: bytes) -> bytes:
        out = bytearray(max(0, len(record) - TAG_BYTES))
        try:
            self._aead.decrypt_into(_nonce(0), record, binding, memoryview(out))
        except ValueError as exc:
            raise BulkError(f"bad record: {exc}") from None
        return bytes(out)

    def open_into(self, record: memoryview, out: memoryview) -> int:
        """Authenticate and decrypt one record (as announced by its header) into ``out``.
        Returns the chunk's length (0 for the hello)."""
        ad = _ad(self._tid, self.offset) if self.greeted else b""
        size = len(record) - TAG_BYTES
        if size < 0 or len(out) < size:
            raise BulkError("record shorter than its tag, or no room to open it")
        try:
            n = self._aead.decrypt_into(_nonce(self._counter), record, ad, out[:size])
        except InvalidTag:
            raise BulkError("a record failed authentication") from None
        except ValueError as exc:  # wrong sizes: a bug or a lie about the length
            raise BulkError(f"bad record: {exc}") from None
        if not self.greeted:
            if bytes(out[:n]) != self._tid:
                raise BulkError("hello names another transfer")
            self._counter = 1
            return 0
        self._counter += 1
        self.offset += n
        return int(n)

    def feed(self, data: bytes) -> list[bytes]:
        """Buffer ``data``; return every chunk completed by it, in order."""
        self._buf += data
        chunks: list[bytes] = []
        while len(self._buf) >= HEADER_BYTES:
            if self.done:
                raise BulkError("peer sent more than the offered size")
            length = self.record_length(self._buf[:HEADER_BYTES])
            if len(self._buf) < HEADER_BYTES + length:
                break
            record = memoryview(self._buf)[HEADER_BYTES : HEADER_BYTES + length]
            out = bytearray(length - TAG_BYTES)
            try:
                n = self.open_into(record, memoryview(out))
            finally:
                record.release()
            del self._buf[: HEADER_BYTES + length]
            if n:
                chunks.append(bytes(out))
        return chunks

    @property
    def buffered(self) -> int:
        return len(self._buf)
