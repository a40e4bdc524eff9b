"""p2pchat.net.compat: every py-libp2p internal p2pchat patches or relies on, checked.

For each declared contract: a test that the installed py-libp2p fulfils it (verified here
from the library's source, independently of compat's own bytecode and signature checks),
and tests that ``check()`` fails loudly, naming the symbol, once that symbol is removed or
changes shape. Then the patches themselves: applied once, through compat, with the values
docs/ARCHITECTURE.md §8 describes.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import SimpleNamespace
from typing import Any

import libp2p.kad_dht.value_store as kad_values
import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.kad_dht.value_store import ValueStore
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID

from p2pchat.identity import Identity
from p2pchat.net import compat, host
from p2pchat.net.compat import (
    CONTRACTS,
    Attribute,
    Class,
    Constant,
    Contract,
    Function,
    HeldOnlyBy,
    LibraryMismatch,
    LooksUp,
)

BY_KEY = {c.key: c for c in CONTRACTS}
KEYS = list(BY_KEY)


def _owner_and_name(module: str, qualname: str) -> tuple[Any, str]:
    owner: Any = importlib.import_module(module)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name


def _resolve(module: str, qualname: str) -> Any:
    owner, name = _owner_and_name(module, qualname)
    return getattr(owner, name)


def _make_function(params: str, body: str = "return None", *, is_async: bool = False) -> Any:
    namespace: dict[str, Any] = {}
    exec(f"{'async ' if is_async else ''}def replacement({params}):\n    {body}\n", namespace)
    return namespace["replacement"]


def _params(func: Any, qualname: str) -> list[inspect.Parameter]:
    params = list(inspect.signature(func).parameters.values())
    if "." in qualname and params and params[0].name == "self":
        params = params[1:]
    return params


def _assigns(source: str, name: str) -> bool:
    return re.search(rf"\bself\.{re.escape(name)}\s*(:[^=\n]+)?=(?!=)", source) is not None


# --- each contract holds on the installed py-libp2p ------------------------------------------


def _assert_shape(contract: Contract) -> None:
    """The contract, verified from the library's objects and source text."""
    if isinstance(contract, Constant):
        value = _resolve(contract.module, contract.name)
        assert isinstance(value, contract.kind) and not inspect.isclass(value)
    elif isinstance(contract, Class):
        value = _resolve(contract.module, contract.name)
        assert inspect.isclass(value)
        if contract.subclass_of is not None:
            assert issubclass(value, _resolve(*contract.subclass_of))
    elif isinstance(contract, Function):
        func = _resolve(contract.module, contract.qualname)
        params = _params(func, contract.qualname)
        names = [p.name for p in params]
        assert names[: len(contract.args)] == list(contract.args)
        assert all(
            p.kind is not inspect.Parameter.POSITIONAL_ONLY
            for p in params
            if p.name in contract.keywords
        )
        assert set(contract.keywords) <= set(names)
        if contract.exact:
            assert names == [*contract.args, *contract.keywords]
        else:
            passed = {*contract.args, *contract.keywords}
            assert all(
                p.default is not p.empty
                for p in params
                if p.name not in passed and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            )
        if contract.coroutine is not None:
            assert inspect.iscoroutinefunction(func) is contract.coroutine
    elif isinstance(contract, Attribute):
        cls = _resolve(contract.module, contract.cls)
        assert _assigns(inspect.getsource(getattr(cls, contract.set_in)), contract.name)
        if contract.only_there:
            for member, value in vars(cls).items():
                if member != contract.set_in and inspect.isfunction(value):
                    assert not _assigns(inspect.getsource(value), contract.name), member
    elif isinstance(contract, LooksUp):
        source = inspect.getsource(_resolve(contract.module, contract.qualname))
        code = source.split('"""')[-1] if '"""' in source else source  # after the docstring
        mentioned = re.search(rf"\b{re.escape(contract.name)}\b", code) is not None
        assert mentioned is not contract.absent
    elif isinstance(contract, HeldOnlyBy):
        package = importlib.import_module(contract.module)
        holders = {
            info.name
            for info in pkgutil.iter_modules(package.__path__, prefix=f"{contract.module}.")
            if hasattr(importlib.import_module(info.name), contract.name)
        }
        assert holders == set(contract.modules)
    else:
        pytest.fail(f"no shape test for {type(contract).__name__}")


@pytest.mark.parametrize("key", KEYS)
def test_contract_holds(key: str) -> None:
    contract = BY_KEY[key]
    assert contract.reason
    assert contract.problem() is None
    _assert_shape(contract)


def test_check_passes_on_the_installed_libp2p() -> None:
    compat.check()
    # A py-libp2p upgrade is a review of every workaround (docs/ARCHITECTURE.md §8): once
    # done, bump WRITTEN_FOR.
    assert compat.libp2p_version() == compat.WRITTEN_FOR


def test_contract_keys_are_unique() -> None:
    assert len(BY_KEY) == len(CONTRACTS)


# --- check() fails loudly when a symbol is missing or misshapen -----------------------------


def _remove(contract: Contract, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the symbol disappear from py-libp2p (for this test)."""
    if isinstance(contract, Constant | Class):
        monkeypatch.delattr(importlib.import_module(contract.module), contract.name)
    elif isinstance(contract, Function):
        owner, name = _owner_and_name(contract.module, contract.qualname)
        monkeypatch.delattr(owner, name)
    elif isinstance(contract, Attribute):  # the method no longer sets it
        cls = _resolve(contract.module, contract.cls)
        monkeypatch.setattr(cls, contract.set_in, _make_function("self, *args, **kwargs"))
    elif isinstance(contract, LooksUp):
        owner, name = _owner_and_name(contract.module, contract.qualname)
        body = f"return self.{contract.name}" if contract.absent else "return None"
        monkeypatch.setattr(owner, name, _make_function("self, *args, **kwargs", body))
    elif isinstance(contract, HeldOnlyBy):
        monkeypatch.delattr(importlib.import_module(contract.modules[-1]), contract.name)
    else:
        pytest.fail(f"cannot remove a {type(contract).__name__}")


def _misshape(contract: Contract, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the symbol but give it another shape (for this test)."""
    if isinstance(contract, Constant):
        monkeypatch.setattr(importlib.import_module(contract.module), contract.name, object())
    elif isinstance(contract, Class):
        monkeypatch.setattr(
            importlib.import_module(contract.module), contract.name, type("Impostor", (), {})
        )
    elif isinstance(contract, Function):  # same async-ness, another parameter list
        owner, name = _owner_and_name(contract.module, contract.qualname)
        params = "self, unexpected" if "." in contract.qualname else "unexpected"
        replacement = _make_function(params, is_async=bool(contract.coroutine))
        monkeypatch.setattr(owner, name, replacement)
    elif isinstance(contract, Attribute):  # another method overwrites it
        cls = _resolve(contract.module, contract.cls)
        overwrite = _make_function("self", f"self.{contract.name} = None")
        monkeypatch.setattr(cls, "reset_state", overwrite, raising=False)
    elif isinstance(contract, HeldOnlyBy):  # a sixth module keeps its own copy
        extra = importlib.import_module(f"{contract.module}.utils")
        monkeypatch.setattr(extra, contract.name, "/ipfs/kad/1.0.0", raising=False)
    else:
        pytest.fail(f"cannot misshape a {type(contract).__name__}")


def _assert_check_names(contract: Contract) -> None:
    assert contract.problem() is not None
    with pytest.raises(LibraryMismatch) as raised:
        compat.check()
    message = str(raised.value)
    assert contract.symbol in message
    assert contract.expected in message
    assert f"py-libp2p {compat.libp2p_version()}" in message
    assert contract.symbol in [symbol for symbol, _, _ in raised.value.problems]


@pytest.mark.parametrize("key", KEYS)
def test_check_fails_naming_a_missing_symbol(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    contract = BY_KEY[key]
    _remove(contract, monkeypatch)
    _assert_check_names(contract)


MISSHAPEABLE = [
    c.key
    for c in CONTRACTS
    if not isinstance(c, LooksUp) and (not isinstance(c, Attribute) or c.only_there)
]


@pytest.mark.parametrize("key", MISSHAPEABLE)
def test_check_fails_naming_a_misshapen_symbol(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    contract = BY_KEY[key]
    _misshape(contract, monkeypatch)
    _assert_check_names(contract)


ASYNC_OR_NOT = [c.key for c in CONTRACTS if isinstance(c, Function) and c.coroutine is not None]


@pytest.mark.parametrize("key", ASYNC_OR_NOT)
def test_check_fails_when_a_function_turns_async_or_plain(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract = BY_KEY[key]
    assert isinstance(contract, Function)
    owner, name = _owner_and_name(contract.module, contract.qualname)
    flipped = _make_function("*args, **kwargs", is_async=not contract.coroutine)
    flipped.__signature__ = inspect.signature(getattr(owner, name))  # same parameters
    monkeypatch.setattr(owner, name, flipped)
    _assert_check_names(contract)


def test_a_new_required_parameter_breaks_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    contract = BY_KEY["libp2p.kad_dht.kad_dht.KadDHT.__init__"]
    monkeypatch.setattr(
        _resolve("libp2p.kad_dht.kad_dht", "KadDHT"),
        "__init__",
        _make_function(
            "self, host, mode, validator=None, validator_changed=False, strict_validation=False,"
            " *, must"
        ),
    )
    assert "also requires must" in (contract.problem() or "")


def test_check_reports_every_broken_contract_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(Swarm, "dial_peer")
    monkeypatch.setattr(kad_values, "MAX_VALUE_STORE_SIZE", "10000")
    with pytest.raises(LibraryMismatch) as raised:
        compat.check()
    assert [symbol for symbol, _, _ in raised.value.problems] == [
        "libp2p.network.swarm.Swarm.dial_peer",
        "libp2p.kad_dht.value_store.MAX_VALUE_STORE_SIZE",
    ]


# --- our overrides and replacements fit the declared shapes -------------------------------


OURS = [c.key for c in CONTRACTS if isinstance(c, Function) and c.ours is not None]


@pytest.mark.parametrize("key", OURS)
def test_our_override_matches_the_library_signature(key: str) -> None:
    contract = BY_KEY[key]
    assert isinstance(contract, Function) and contract.ours is not None and contract.exact
    module, qualname = contract.ours.split(":")
    ours = _resolve(module, qualname)
    assert [p.name for p in _params(ours, qualname)] == [*contract.args, *contract.keywords]
    assert inspect.iscoroutinefunction(ours) is contract.coroutine
    library = _resolve(contract.module, contract.qualname)
    assert [p.kind for p in _params(ours, qualname)] == [
        p.kind for p in _params(library, contract.qualname)
    ]


# --- the patches, applied through compat ---------------------------------------------------


async def test_build_host_checks_before_it_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    installs: list[bool] = []
    monkeypatch.setattr(compat, "install_lean_yamux", lambda: installs.append(True))
    monkeypatch.delattr(Swarm, "dial_peer")
    with pytest.raises(LibraryMismatch, match=r"Swarm\.dial_peer"):
        host.build_host(Identity.generate())
    assert installs == []


async def test_network_patches_its_swarm() -> None:
    network = host.Network(Identity.generate())
    swarm = network.host.get_network()
    assert isinstance(swarm, Swarm)
    assert swarm.dial_peer == network.dial_known
    assert swarm.auto_connector.maybe_connect is compat._no_auto_connect
    assert await swarm.auto_connector.maybe_connect() is None
    assert swarm.retry_config.max_retries == 0
    assert "_do_handle_inbound_connection" in vars(swarm)  # gate_inbound, on this swarm only
    import libp2p.stream_muxer.muxer_multistream as muxer_multistream

    from p2pchat.net.yamux.connection import LeanYamux

    assert muxer_multistream.Yamux is LeanYamux


def test_the_lowered_value_store_cap_is_what_eviction_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kad_values, "MAX_VALUE_STORE_SIZE", kad_values.MAX_VALUE_STORE_SIZE)
    compat.limit_value_store(3)
    key_pair = create_new_key_pair()
    fake_host: Any = SimpleNamespace(get_private_key=lambda: key_pair.private_key)
    store = ValueStore(fake_host, ID.from_pubkey(key_pair.public_key))
    for n in range(6):
        store.put(f"/p2pchat/{n}".encode(), b"value")
    assert len(store.store) == 3


def test_the_dht_protocol_is_set_in_every_module_that_holds_it() -> None:
    before = compat.dht_protocol()
    try:
        compat.set_dht_protocol("/test/kad/0.0.1")
        for module in compat.DHT_PROTOCOL_MODULES:
            assert getattr(module, "PROTOCOL_ID") == "/test/kad/0.0.1"  # noqa: B009
        assert compat.dht_protocol() == "/test/kad/0.0.1"
    finally:
        compat.set_dht_protocol(before)
