"""Tests of PeerIds, friend codes and key files (p2pchat.identity)."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import base58
import cbor2
import nacl.bindings
import nacl.pwhash
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.peer.id import ID

from p2pchat import identity as idm
from p2pchat.identity import (
    CODE_PREFIX,
    FriendCode,
    Identity,
    IdentityError,
    PassphraseRequired,
    WrongPassphrase,
)

SETTINGS = settings(max_examples=200, deadline=None)
FAST_KDF = {
    "opslimit": nacl.pwhash.argon2id.OPSLIMIT_MIN,
    "memlimit": nacl.pwhash.argon2id.MEMLIMIT_MIN,
}
B32_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
SUBSTITUTES = B32_ALPHABET + "01890=:-_+/"

seeds = st.binary(min_size=32, max_size=32)
addr_lists = st.lists(
    st.text(st.characters(codec="ascii", exclude_characters="\x00"), max_size=30).map(
        lambda s: "/" + s
    ),
    max_size=5,
).map(tuple)


def pk_of(seed: bytes) -> bytes:
    return bytes(nacl.signing.SigningKey(seed).verify_key)


def id_of(seed: bytes) -> str:
    return idm.peer_id_from_public_key(pk_of(seed))


FIXED_ID = id_of(b"\x42" * 32)
FIXED_CODE = FriendCode(FIXED_ID).encode()
FIXED_CODE_ADDRS = FriendCode(
    FIXED_ID, ("/ip4/192.0.2.1/tcp/4001", "/ip6/::1/udp/1/quic-v1")
).encode()
FIXED_INVITE = bytes(range(1, 9))
FIXED_CODE_INVITE = FriendCode(FIXED_ID, ("/ip4/192.0.2.1/tcp/4001",), FIXED_INVITE).encode()


def _invalid_point() -> bytes:
    for i in range(256):
        candidate = bytes([i]) * 32
        if not nacl.bindings.crypto_core_ed25519_is_valid_point(candidate):
            return candidate
    raise AssertionError("no invalid point found")  # pragma: no cover


INVALID_POINT = _invalid_point()


def code_for_payload(payload: bytes) -> str:
    """Build a code with a *correct* checksum around an arbitrary payload."""
    check = idm._code_checksum(payload)
    return CODE_PREFIX + base64.b32encode(payload + check).decode().rstrip("=").lower()


# --- PeerIds ---------------------------------------------------------------------------------


@SETTINGS
@given(seeds)
def test_peer_id_matches_libp2p(seed: bytes) -> None:
    pk = pk_of(seed)
    expected = str(ID.from_pubkey(Ed25519PublicKey.from_bytes(pk)))
    assert idm.peer_id_from_public_key(pk) == expected


@SETTINGS
@given(seeds)
def test_peer_id_round_trip(seed: bytes) -> None:
    pk = pk_of(seed)
    pid = idm.peer_id_from_public_key(pk)
    assert pid.startswith("12D3KooW")
    assert len(pid) == 52
    assert idm.public_key_from_peer_id(pid) == pk
    assert idm.check_peer_id(f"  {pid}\n") == pid


def test_identity_properties() -> None:
    ident = Identity.generate()
    assert len(ident.seed) == 32
    assert ident.peer_id == idm.peer_id_from_public_key(ident.public_key)
    assert ident.peer_id == str(ID.from_pubkey(Ed25519PublicKey.from_bytes(ident.public_key)))
    sig = ident.sign(b"data")
    nacl.signing.VerifyKey(ident.public_key).verify(b"data", sig)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_peer_id_from_public_key_wrong_size(size: int) -> None:
    with pytest.raises(ValueError):
        idm.peer_id_from_public_key(b"\x01" * size)


def test_bare_id_empty() -> None:
    for text in ["", "   ", "\n\t"]:
        with pytest.raises(IdentityError, match="empty"):
            idm.check_peer_id(text)


@pytest.mark.parametrize(
    "text",
    [
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",  # an RSA/sha256 PeerId
        "12D3KooV" + FIXED_ID[8:],
        "hello",
        FIXED_ID.lower(),
    ],
)
def test_bare_id_wrong_prefix(text: str) -> None:
    with pytest.raises(IdentityError, match="12D3KooW") as err:
        idm.check_peer_id(text)
    assert CODE_PREFIX in str(err.value)


@pytest.mark.parametrize(
    "text",
    [FIXED_ID[:-1], FIXED_ID + "a", FIXED_ID[:30], FIXED_ID + FIXED_ID[8:], "12D3KooW"],
)
def test_bare_id_wrong_length(text: str) -> None:
    with pytest.raises(IdentityError, match="wrong length"):
        idm.check_peer_id(text)


@pytest.mark.parametrize("bad", ["0", "O", "I", "l", "+", "é"])
def test_bare_id_invalid_base58_chars(bad: str) -> None:
    text = FIXED_ID[:20] + bad + FIXED_ID[21:]
    with pytest.raises(IdentityError, match="characters") as err:
        idm.check_peer_id(text)
    assert repr(bad) in str(err.value)


def test_bare_id_invalid_point() -> None:
    text = base58.b58encode(idm._PEER_ID_PREFIX + INVALID_POINT).decode()
    assert text.startswith("12D3KooW")
    with pytest.raises(IdentityError, match="valid public key"):
        idm.check_peer_id(text)


def test_bare_id_errors_are_identity_errors_only() -> None:
    for text in ["12D3KooW" + "1" * 44, "12D3KooW" + "z" * 44, "12D3KooW" + "\x00" * 44]:
        with pytest.raises(IdentityError):
            idm.check_peer_id(text)


# --- friend codes ----------------------------------------------------------------------------


@SETTINGS
@given(seeds, addr_lists)
def test_friend_code_round_trip(seed: bytes, addrs: tuple[str, ...]) -> None:
    fc = FriendCode(id_of(seed), addrs)
    code = fc.encode()
    assert code.startswith(CODE_PREFIX)
    assert code == code.lower()
    assert idm.decode_friend_code(code) == fc
    assert idm.parse_id_or_code(code) == fc


def test_friend_code_without_addrs() -> None:
    fc = idm.decode_friend_code(FIXED_CODE)
    assert fc == FriendCode(FIXED_ID, ())
    assert fc.addrs == ()


def test_friend_code_case_insensitive() -> None:
    expected = idm.decode_friend_code(FIXED_CODE_ADDRS)
    assert idm.decode_friend_code(FIXED_CODE_ADDRS.upper()) == expected
    assert idm.parse_id_or_code(FIXED_CODE_ADDRS.upper()) == expected
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(FIXED_CODE_ADDRS))
    assert idm.decode_friend_code(mixed) == expected


@SETTINGS
@given(st.lists(st.tuples(st.integers(min_value=0), st.sampled_from([" ", "\n", "\t", "\r\n"]))))
def test_friend_code_tolerates_whitespace(inserts: list[tuple[int, str]]) -> None:
    expected = idm.decode_friend_code(FIXED_CODE_ADDRS)
    anywhere = body_only = FIXED_CODE_ADDRS
    for pos, ws in inserts:
        pos %= len(anywhere) + 1
        anywhere = anywhere[:pos] + ws + anywhere[pos:]
        pos = len(CODE_PREFIX) + pos % (len(body_only) - len(CODE_PREFIX) + 1)
        body_only = body_only[:pos] + ws + body_only[pos:]
    assert idm.decode_friend_code(anywhere) == expected
    assert idm.parse_id_or_code(body_only) == expected


def test_parse_id_or_code_tolerates_whitespace_in_prefix() -> None:
    code = FIXED_CODE[:4] + "\n" + FIXED_CODE[4:]
    assert idm.decode_friend_code(code) == FriendCode(FIXED_ID)
    assert idm.parse_id_or_code(code) == FriendCode(FIXED_ID)


def _substitutions(code: str, pos: int) -> Iterator[str]:
    for c in SUBSTITUTES:
        if c != code[pos].lower():
            yield code[:pos] + c + code[pos + 1 :]


def _assert_rejected(text: str) -> None:
    with pytest.raises(IdentityError):
        idm.decode_friend_code(text)
    with pytest.raises(IdentityError):
        idm.parse_id_or_code(text)


@pytest.mark.parametrize(
    "code", [FIXED_CODE, FIXED_CODE_ADDRS, FIXED_CODE_INVITE], ids=["plain", "addrs", "invite"]
)
def test_every_substitution_rejected_except_last_char(code: str) -> None:
    for pos in range(len(code) - 1):
        for typo in _substitutions(code, pos):
            _assert_rejected(typo)


def test_substitution_of_last_char_rejected() -> None:
    # FIXED_CODE is 47 bytes = 376 bits = 75 characters + 1 bit, so its last character
    # carries 4 unused bits.
    for typo in _substitutions(FIXED_CODE, len(FIXED_CODE) - 1):
        _assert_rejected(typo)


@pytest.mark.parametrize(
    "code", [FIXED_CODE, FIXED_CODE_ADDRS, FIXED_CODE_INVITE], ids=["plain", "addrs", "invite"]
)
def test_every_deletion_rejected(code: str) -> None:
    for pos in range(len(code)):
        _assert_rejected(code[:pos] + code[pos + 1 :])


@pytest.mark.parametrize(
    "code", [FIXED_CODE, FIXED_CODE_ADDRS, FIXED_CODE_INVITE], ids=["plain", "addrs", "invite"]
)
def test_every_adjacent_transposition_rejected(code: str) -> None:
    for pos in range(len(code) - 1):
        a, b = code[pos], code[pos + 1]
        if a.lower() == b.lower():
            continue
        _assert_rejected(code[:pos] + b + a + code[pos + 2 :])


@settings(max_examples=300, deadline=None)
@given(seeds, addr_lists, st.data())
def test_random_single_typo_rejected(
    seed: bytes, addrs: tuple[str, ...], data: st.DataObject
) -> None:
    code = FriendCode(id_of(seed), addrs).encode()
    kind = data.draw(st.sampled_from(["sub", "del", "swap"]), "kind")
    pos = data.draw(st.integers(min_value=0, max_value=len(code) - 1), "pos")
    if kind == "sub":
        c = data.draw(st.sampled_from(SUBSTITUTES).filter(lambda c: c != code[pos]), "char")
        typo = code[:pos] + c + code[pos + 1 :]
    elif kind == "del":
        typo = code[:pos] + code[pos + 1 :]
    else:
        if pos + 1 >= len(code) or code[pos] == code[pos + 1]:
            return
        typo = code[:pos] + code[pos + 1] + code[pos] + code[pos + 2 :]
    _assert_rejected(typo)


def test_truncated_code_rejected() -> None:
    for n in range(len(FIXED_CODE) - 1):
        _assert_rejected(FIXED_CODE[:n])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("hello", "start with"),
        ("p2pchat", "start with"),
        ("p2pchat:", "too short"),
        ("p2pchat:aaaaaaa", "too short"),  # 4 bytes: no room for a payload
        ("p2pchat:" + "a" * 5000, "too long"),
        ("p2pchat:1189aaaa", "characters"),
    ],
)
def test_bad_codes_messages(text: str, match: str) -> None:
    with pytest.raises(IdentityError, match=match):
        idm.decode_friend_code(text)


def test_code_with_unsupported_version() -> None:
    payload = cbor2.dumps({"v": 3, "k": pk_of(b"\x01" * 32), "a": [], "i": b"\x00" * 8})
    with pytest.raises(IdentityError, match="unsupported version"):
        idm.decode_friend_code(code_for_payload(payload))


@pytest.mark.parametrize(
    "doc",
    [
        {"v": 1, "k": "x" * 32, "a": []},
        {"v": 1, "k": b"\x01" * 31, "a": []},
        {"v": 1, "a": []},
        {"v": 1, "k": b"\x01" * 32, "a": "/ip4"},
        {"v": 1, "k": b"\x01" * 32, "a": [1]},
        {"v": 1, "k": b"\x01" * 32, "a": ["ip4"]},
        [1, 2, 3],
        "text",
        {"v": 1, "k": b"\x01" * 32, "a": [[[["/deep"]]]]},
        {"v": 2, "k": b"\x01" * 32, "a": []},  # v2 must carry an invite
        {"v": 2, "k": b"\x01" * 32, "a": [], "i": b"\x00" * 7},
        {"v": 2, "k": b"\x01" * 32, "a": [], "i": "12345678"},
    ],
    ids=repr,
)
def test_code_with_corrupt_payload(doc: object) -> None:
    with pytest.raises(IdentityError, match="corrupt"):
        idm.decode_friend_code(code_for_payload(cbor2.dumps(doc)))


def test_code_with_tagged_or_garbage_payload() -> None:
    for payload in [b"\xff\xff", b"\xc1\x00", b"\xa1\x61k"]:
        with pytest.raises(IdentityError):
            idm.decode_friend_code(code_for_payload(payload))


def test_code_with_invalid_key() -> None:
    payload = cbor2.dumps({"v": 1, "k": INVALID_POINT, "a": []})
    with pytest.raises(IdentityError, match="invalid public key"):
        idm.decode_friend_code(code_for_payload(payload))


def test_code_without_addrs_field() -> None:
    pk = pk_of(b"\x05" * 32)
    fc = idm.decode_friend_code(code_for_payload(cbor2.dumps({"v": 1, "k": pk})))
    assert fc == FriendCode(idm.peer_id_from_public_key(pk), ())


def test_code_addrs_truncated_to_16() -> None:
    addrs = tuple(f"/ip4/10.0.0.{i}/tcp/1" for i in range(20))
    fc = idm.decode_friend_code(FriendCode(FIXED_ID, addrs).encode())
    assert fc.addrs == addrs[:16]


def test_encode_rejects_invalid_peer_id() -> None:
    with pytest.raises(IdentityError):
        FriendCode("not-an-id").encode()


def test_parse_id_or_code_accepts_both() -> None:
    assert idm.parse_id_or_code(FIXED_ID) == FriendCode(FIXED_ID)
    assert idm.parse_id_or_code(f"  {FIXED_ID} \n") == FriendCode(FIXED_ID)
    assert idm.parse_id_or_code(f"\n {FIXED_CODE_ADDRS} ") == idm.decode_friend_code(
        FIXED_CODE_ADDRS
    )
    for bad in ["", "nonsense", FIXED_ID[:-1], FIXED_CODE[:-3]]:
        with pytest.raises(IdentityError):
            idm.parse_id_or_code(bad)


# --- key files -------------------------------------------------------------------------------


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "identity.key"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_load_plain(key_path: Path) -> None:
    ident = Identity.generate()
    idm.save_identity(ident, key_path)
    assert _mode(key_path) == 0o600
    assert not idm.key_file_is_encrypted(key_path)
    doc = json.loads(key_path.read_text())
    assert doc["peer_id"] == ident.peer_id
    loaded = idm.load_identity(key_path)
    assert loaded.seed == ident.seed
    assert loaded.peer_id == ident.peer_id
    # A passphrase given for a plain file is ignored.
    assert idm.load_identity(key_path, b"unused").seed == ident.seed
    assert [p.name for p in key_path.parent.iterdir()] == [key_path.name]


def test_save_mode_0600_even_with_permissive_umask(key_path: Path) -> None:
    key_path.write_text("old")
    key_path.chmod(0o644)
    old = os.umask(0)
    try:
        idm.save_identity(Identity.generate(), key_path)
    finally:
        os.umask(old)
    assert _mode(key_path) == 0o600


def test_save_mode_0600_with_stale_tmp_file(key_path: Path) -> None:
    tmp = key_path.with_name(key_path.name + ".tmp")
    tmp.write_text("stale")
    tmp.chmod(0o644)
    idm.save_identity(Identity.generate(), key_path)
    assert _mode(key_path) == 0o600


def test_save_load_encrypted(key_path: Path) -> None:
    ident = Identity.generate()
    idm.save_identity(ident, key_path, b"correct horse", **FAST_KDF)
    assert _mode(key_path) == 0o600
    assert idm.key_file_is_encrypted(key_path)
    text = key_path.read_text()
    assert base64.b64encode(ident.seed).decode() not in text
    assert "seed" not in json.loads(text)
    assert idm.load_identity(key_path, b"correct horse").seed == ident.seed


def test_wrong_passphrase(key_path: Path) -> None:
    idm.save_identity(Identity.generate(), key_path, b"right", **FAST_KDF)
    with pytest.raises(WrongPassphrase):
        idm.load_identity(key_path, b"wrong")
    assert issubclass(WrongPassphrase, IdentityError)


@pytest.mark.parametrize("passphrase", [None, b""])
def test_missing_passphrase(key_path: Path, passphrase: bytes | None) -> None:
    idm.save_identity(Identity.generate(), key_path, b"secret", **FAST_KDF)
    with pytest.raises(PassphraseRequired, match="passphrase"):
        idm.load_identity(key_path, passphrase)
    assert issubclass(PassphraseRequired, IdentityError)


def test_empty_passphrase_saves_plain(key_path: Path) -> None:
    idm.save_identity(Identity.generate(), key_path, b"", **FAST_KDF)
    assert not idm.key_file_is_encrypted(key_path)


def test_missing_file(key_path: Path) -> None:
    with pytest.raises(IdentityError, match="no key file"):
        idm.load_identity(key_path)
    assert not idm.key_file_is_encrypted(key_path)


def test_truncated_file(key_path: Path) -> None:
    idm.save_identity(Identity.generate(), key_path)
    data = key_path.read_bytes()
    for n in [0, 1, len(data) // 2, len(data) - 2]:
        key_path.write_bytes(data[:n])
        with pytest.raises(IdentityError, match="unreadable"):
            idm.load_identity(key_path)


def test_truncated_encrypted_file(key_path: Path) -> None:
    idm.save_identity(Identity.generate(), key_path, b"pw", **FAST_KDF)
    data = key_path.read_bytes()
    key_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IdentityError):
        idm.load_identity(key_path, b"pw")
    assert not idm.key_file_is_encrypted(key_path)


def test_binary_garbage_file(key_path: Path) -> None:
    key_path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(IdentityError):
        idm.load_identity(key_path)


def _plain_doc() -> dict[str, object]:
    ident = Identity.generate()
    return {
        "version": 1,
        "type": "ed25519",
        "peer_id": ident.peer_id,
        "seed": base64.b64encode(ident.seed).decode(),
    }


CORRUPT_PLAIN = {
    "list": lambda d: [d],
    "version 2": lambda d: {**d, "version": 2},
    "no version": lambda d: {k: v for k, v in d.items() if k != "version"},
    "no seed": lambda d: {k: v for k, v in d.items() if k != "seed"},
    "seed not str": lambda d: {**d, "seed": 5},
    "seed not base64": lambda d: {**d, "seed": "!!!not base64!!!"},
    "seed too short": lambda d: {**d, "seed": base64.b64encode(b"\x01" * 31).decode()},
    "seed too long": lambda d: {**d, "seed": base64.b64encode(b"\x01" * 64).decode()},
    "wrong peer_id": lambda d: {**d, "peer_id": FIXED_ID},
    "peer_id garbage": lambda d: {**d, "peer_id": "x"},
}


@pytest.mark.parametrize("mutate", CORRUPT_PLAIN.values(), ids=CORRUPT_PLAIN.keys())
def test_corrupt_plain_key_file(key_path: Path, mutate: object) -> None:
    assert callable(mutate)
    key_path.write_text(json.dumps(mutate(_plain_doc())))
    with pytest.raises(IdentityError):
        idm.load_identity(key_path)


def test_peer_id_mismatch_message(key_path: Path) -> None:
    key_path.write_text(json.dumps({**_plain_doc(), "peer_id": FIXED_ID}))
    with pytest.raises(IdentityError, match="does not match"):
        idm.load_identity(key_path)


def test_peer_id_optional(key_path: Path) -> None:
    doc = _plain_doc()
    del doc["peer_id"]
    key_path.write_text(json.dumps(doc))
    assert (
        idm.load_identity(key_path).peer_id
        == Identity(nacl.signing.SigningKey(base64.b64decode(str(doc["seed"])))).peer_id
    )


CORRUPT_SEALED = {
    "no salt": lambda d: {k: v for k, v in d.items() if k != "salt"},
    "salt short": lambda d: {**d, "salt": base64.b64encode(b"x").decode()},
    "salt not b64": lambda d: {**d, "salt": "@@"},
    "opslimit text": lambda d: {**d, "opslimit": "many"},
    "opslimit null": lambda d: {**d, "opslimit": None},
    "opslimit zero": lambda d: {**d, "opslimit": 0},
    "memlimit missing": lambda d: {k: v for k, v in d.items() if k != "memlimit"},
    "sealed not b64": lambda d: {**d, "sealed_seed": "@@"},
    "sealed short": lambda d: {**d, "sealed_seed": base64.b64encode(b"x").decode()},
    "sealed int": lambda d: {**d, "sealed_seed": 7},
    "wrong peer_id": lambda d: {**d, "peer_id": FIXED_ID},
}


@pytest.mark.parametrize("mutate", CORRUPT_SEALED.values(), ids=CORRUPT_SEALED.keys())
def test_corrupt_encrypted_key_file(key_path: Path, mutate: object) -> None:
    assert callable(mutate)
    idm.save_identity(Identity.generate(), key_path, b"pw", **FAST_KDF)
    key_path.write_text(json.dumps(mutate(json.loads(key_path.read_text()))))
    with pytest.raises(IdentityError):
        idm.load_identity(key_path, b"pw")


def test_tampered_ciphertext_is_refused(key_path: Path) -> None:
    idm.save_identity(Identity.generate(), key_path, b"pw", **FAST_KDF)
    doc = json.loads(key_path.read_text())
    sealed = bytearray(base64.b64decode(doc["sealed_seed"]))
    sealed[-1] ^= 1
    doc["sealed_seed"] = base64.b64encode(bytes(sealed)).decode()
    key_path.write_text(json.dumps(doc))
    with pytest.raises(WrongPassphrase):
        idm.load_identity(key_path, b"pw")


def test_save_overwrites_atomically(key_path: Path) -> None:
    first, second = Identity.generate(), Identity.generate()
    idm.save_identity(first, key_path)
    idm.save_identity(second, key_path, b"pw", **FAST_KDF)
    assert idm.load_identity(key_path, b"pw").seed == second.seed
    assert sorted(p.name for p in key_path.parent.iterdir()) == [key_path.name]


# --- friend code v2: the invite secret ---------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(seeds, addr_lists, st.binary(min_size=8, max_size=8))
def test_friend_code_v2_round_trip(seed: bytes, addrs: tuple[str, ...], invite: bytes) -> None:
    fc = FriendCode(id_of(seed), addrs, invite)
    code = fc.encode()
    assert idm.decode_friend_code(code) == fc
    assert idm.parse_id_or_code(code) == fc
    payload = base64.b32decode(code[len(CODE_PREFIX) :].upper() + "=" * (-len(code) % 8))
    assert cbor2.loads(payload[:-4])["v"] == 2


def test_v1_codes_still_decode_without_an_invite() -> None:
    """Codes handed out before v2 existed (fixed bytes, as an old daemon wrote them)."""
    payload = cbor2.dumps({"v": 1, "k": pk_of(b"\x42" * 32), "a": ["/ip4/192.0.2.1/tcp/4001"]})
    fc = idm.decode_friend_code(code_for_payload(payload))
    assert fc == FriendCode(FIXED_ID, ("/ip4/192.0.2.1/tcp/4001",))
    assert fc.invite is None
    assert FriendCode(FIXED_ID).encode() == FIXED_CODE  # no invite: still written as v1
    assert idm.decode_friend_code(FIXED_CODE).invite is None


def test_bare_id_carries_no_invite() -> None:
    assert idm.parse_id_or_code(FIXED_ID).invite is None


def test_codes_differ_only_by_invite() -> None:
    other = FriendCode(FIXED_ID, ("/ip4/192.0.2.1/tcp/4001",), b"\xff" * 8).encode()
    assert other != FIXED_CODE_INVITE
    assert idm.decode_friend_code(other).invite == b"\xff" * 8
    assert idm.decode_friend_code(FIXED_CODE_INVITE).invite == FIXED_INVITE


@pytest.mark.parametrize("invite", [b"", b"\x00" * 7, b"\x00" * 9])
def test_encode_rejects_a_wrong_size_invite(invite: bytes) -> None:
    with pytest.raises(ValueError):
        FriendCode(FIXED_ID, (), invite).encode()
