"""Noise transport messages read and written by p2pchat, after py-libp2p's own handshake.

py-libp2p's Noise handshake is kept as it is (XX, the libp2p payload with the identity key
and its signature, checked by the library). What changes is the transport phase that
follows, the path every byte of every stream takes: py-libp2p reads each message as a
2-byte length and then a body, each through ``read_exactly`` and its message-reader layers,
and encrypts through the ``noise`` package's cipher-state objects; measured, that Python
overhead was about as much CPU as the decryption itself. :class:`LeanNoiseSession` takes the
connection over once the handshake is done: it reads the raw connection in large pieces,
cuts messages out of them itself, and seals and opens them with ChaCha20-Poly1305 directly
(the keys and nonces the handshake produced, the nonce format of the Noise spec). The wire
format is unchanged (``u16 length ‖ ciphertext`` with at most 65,535 bytes of ciphertext),
so the peer may run stock py-libp2p, go-libp2p or js-libp2p.

:class:`LeanNoiseTransport` is the security transport ``host.build_host`` offers as
``/noise``. A handshake that did not end in the cipher suite this module implements
(``Noise_XX_25519_ChaChaPoly_SHA256``, the only one py-libp2p negotiates) keeps the stock
session. A message that fails authentication closes the connection
(:class:`NoiseMessageRejected`, a ``ConnectionClosedError``): after it, nothing more on
the connection can be trusted.
"""

from __future__ import annotations

from typing import Final, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from libp2p.abc import IRawConnection, ISecureConn
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.peer.id import ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.secure_session import SecureSession

SUITE: Final = b"Noise_XX_25519_ChaChaPoly_SHA256"
MAX_MESSAGE: Final = 65535
"""Bytes of ciphertext in one transport message (the Noise spec's maximum)."""
TAG: Final = 16
MAX_PLAINTEXT: Final = MAX_MESSAGE - TAG
MAX_NONCE: Final = 2**64 - 1
"""Reserved by the Noise spec: a cipher state that reaches it may not be used again."""
READ_SIZE: Final = 256 * 1024
"""Bytes asked of the raw connection per read (several full messages)."""


class NoiseMessageRejected(ConnectionClosedError):
    """A transport message failed authentication (or the nonces ran out): the connection
    cannot go on."""


class _CipherState:
    """One direction's ChaCha20-Poly1305 key and nonce counter."""

    __slots__ = ("_aead", "_nonce")

    def __init__(self, key: bytes, nonce: int) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._nonce = nonce

    def _next_nonce(self) -> bytes:
        if self._nonce >= MAX_NONCE:
            raise NoiseMessageRejected("Noise nonces exhausted; the connection must be redone")
        nonce = b"\x00\x00\x00\x00" + self._nonce.to_bytes(8, "little")
        self._nonce += 1
        return nonce

    def seal(self, plaintext: bytes | memoryview) -> bytes:
        return self._aead.encrypt(self._next_nonce(), plaintext, None)

    def open(self, ciphertext: bytes | memoryview) -> bytes:
        try:
            return self._aead.decrypt(self._next_nonce(), ciphertext, None)
        except InvalidTag:
            raise NoiseMessageRejected("Failed authentication of a Noise message") from None


class LeanNoiseSession(SecureSession):
    """py-libp2p's secure session, with the transport phase done here (see module doc).

    ``read(None)`` returns one message's plaintext (or what is left of one), ``read(n)``
    exactly ``n`` bytes unless the connection ends first, as the stock session does."""

    def __init__(self, stock: SecureSession, raw: IRawConnection) -> None:
        super().__init__(
            local_peer=stock.local_peer,
            local_private_key=stock.local_private_key,
            remote_peer=stock.remote_peer,
            remote_permanent_pubkey=stock.remote_permanent_pubkey,
            is_initiator=stock.is_initiator,
            conn=stock.conn,
        )
        protocol = stock.conn.noise_state.noise_protocol  # type: ignore[attr-defined]
        self._sealer = _CipherState(
            protocol.cipher_state_encrypt.k, protocol.cipher_state_encrypt.n
        )
        self._opener = _CipherState(
            protocol.cipher_state_decrypt.k, protocol.cipher_state_decrypt.n
        )
        self._raw = raw
        self._inbox = bytearray()  # raw bytes read, not yet cut into messages
        self._at = 0
        self._plain = b""  # the rest of a message a short read left

    @staticmethod
    def suits(stock: ISecureConn) -> bool:
        """Whether ``stock`` is a Noise session this module can take over."""
        try:
            protocol = stock.conn.noise_state.noise_protocol  # type: ignore[attr-defined]
            encrypt, decrypt = protocol.cipher_state_encrypt, protocol.cipher_state_decrypt
            return (
                isinstance(stock, SecureSession)
                and protocol.name == SUITE
                and isinstance(encrypt.k, bytes)
                and isinstance(decrypt.k, bytes)
                and isinstance(encrypt.n, int)
                and isinstance(decrypt.n, int)
            )
        except AttributeError:
            return False

    async def _message(self) -> bytes:
        """The next non-empty message's plaintext (an empty message carries nothing, and
        b"" from ``read`` means the end); b"" once the connection has ended."""
        inbox = self._inbox
        while True:
            at = self._at
            if len(inbox) - at >= 2:
                end = at + 2 + ((inbox[at] << 8) | inbox[at + 1])
                if len(inbox) >= end:
                    self._at = end
                    view = memoryview(inbox)
                    try:
                        plaintext = self._opener.open(view[at + 2 : end])
                    finally:
                        view.release()
                    if plaintext:
                        return plaintext
                    continue
            if at:  # what is left (part of one message at most) moves to the front
                del inbox[:at]
                self._at = 0
            data = await self._raw.read(READ_SIZE)
            if not data:
                if inbox:
                    raise ConnectionClosedError("the connection ended inside a Noise message")
                return b""
            inbox += data

    async def read(self, n: int | None = None) -> bytes:
        if n == 0:
            return b""
        if n is None:
            data = self._plain or await self._message()
            self._plain = b""
            if not data:
                raise ConnectionClosedError("Connection closed")
            return data
        parts: list[bytes] = []
        size = 0
        while size < n:
            chunk = self._plain or await self._message()
            self._plain = b""
            if not chunk:
                if parts:
                    break
                raise ConnectionClosedError("Connection closed")
            if size + len(chunk) > n:
                self._plain = chunk[n - size :]
                chunk = chunk[: n - size]
            parts.append(chunk)
            size += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def write(self, data: bytes) -> None:
        """Seal ``data`` into as many messages as it takes and write them in one go."""
        view = memoryview(data)
        pieces: list[bytes] = []
        for start in range(0, max(len(view), 1), MAX_PLAINTEXT):
            sealed = self._sealer.seal(view[start : start + MAX_PLAINTEXT])
            pieces.append(len(sealed).to_bytes(2, "big"))
            pieces.append(sealed)
        await self._raw.write(b"".join(pieces))


class LeanNoiseTransport(NoiseTransport):
    """py-libp2p's Noise transport whose sessions p2pchat runs after the handshake."""

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        return _take_over(await super().secure_inbound(conn), conn)

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        return _take_over(await super().secure_outbound(conn, peer_id), conn)


def _take_over(stock: ISecureConn, raw: IRawConnection) -> ISecureConn:
    if LeanNoiseSession.suits(stock):
        return LeanNoiseSession(cast(SecureSession, stock), raw)
    return stock
