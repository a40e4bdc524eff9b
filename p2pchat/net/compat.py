"""Every patch p2pchat applies to py-libp2p, and every private py-libp2p symbol it relies on.

Why this module exists: py-libp2p 0.8.1 has bugs and gaps that p2pchat works around by
patching the library's internals (docs/ARCHITECTURE.md §8 lists each workaround and why it
is needed). Private names change between releases without notice; a patch aimed at a name
that moved or changed shape would at best do nothing (a silent security or reliability
regression) and at worst fail deep inside a connection. So:

- :data:`CONTRACTS` declares, in one list, each private or patched py-libp2p symbol p2pchat
  relies on, with the kind and shape it must have (a class, a module constant of a type, a
  function or method with the parameters we call or override, an instance attribute set by
  a given method, or a function that must look a name up when it runs).
- :func:`check` verifies all of them and raises :class:`LibraryMismatch`, naming each symbol,
  what was expected and the installed py-libp2p version. :func:`p2pchat.net.host.build_host`
  calls it before it patches anything, so a daemon on a py-libp2p it does not fit refuses to
  start instead of misbehaving.
- The patch functions below are the only code in p2pchat that assigns to py-libp2p modules,
  classes or instances, or touches their private attributes (our subclasses
  ``OverlayDHT`` and ``IsolatedCircuitRelay`` override private methods
  where they live; their base-class contracts are declared here). Each patch has a one-line
  reason naming its row in docs/ARCHITECTURE.md §8.

Adding a patch, or using another private py-libp2p name, means adding it here: the patch
function (or the use) with its reason, a contract in :data:`CONTRACTS`, and a contract test
in tests/net/test_compat.py (the tests there run each contract and break each one).
"""

from __future__ import annotations

import contextlib
import dis
import importlib
import importlib.metadata
import inspect
import logging
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import KW_ONLY, dataclass
from types import CodeType, ModuleType
from typing import Any, Final, cast

import libp2p.kad_dht.common as kad_common
import libp2p.kad_dht.kad_dht as kad_main
import libp2p.kad_dht.peer_routing as kad_routing
import libp2p.kad_dht.provider_store as kad_providers
import libp2p.kad_dht.value_store as kad_values
import libp2p.stream_muxer.muxer_multistream as muxer_multistream
import libp2p.transport.tcp.tcp as libp2p_tcp
import trio
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.custom_types import TProtocol
from libp2p.discovery.mdns.mdns import MDNSDiscovery
from libp2p.host.basic_host import BasicHost
from libp2p.host.observed_addr_manager import ObservedAddrManager
from libp2p.kad_dht.value_store import ValueStore
from libp2p.network.config import RetryConfig
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from multiaddr import Multiaddr

from p2pchat.net.tcp_tuning import TunedTCPStream
from p2pchat.net.yamux.connection import LeanYamux

WRITTEN_FOR: Final = "0.8.1"
"""The py-libp2p release these patches were written and tested against."""

DHT_PROTOCOL_MODULES: Final[tuple[ModuleType, ...]] = (
    kad_common,
    kad_main,
    kad_routing,
    kad_values,
    kad_providers,
)
"""The modules that each hold their own copy of the Kad-DHT protocol ID."""

log = logging.getLogger(__name__)


def libp2p_version() -> str:
    try:
        return importlib.metadata.version("libp2p")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class LibraryMismatch(RuntimeError):
    """The installed py-libp2p lacks a symbol p2pchat patches or relies on, or its shape
    changed: the workarounds in this module would not do what they are meant to."""

    def __init__(self, version: str, problems: Sequence[tuple[str, str, str]]) -> None:
        self.version = version
        self.problems = list(problems)
        """(symbol, what was expected, what was found) for each broken contract."""
        lines = "\n".join(f"  - {s}: expected {e}; {f}" for s, e, f in self.problems)
        super().__init__(
            f"py-libp2p {version} does not match what p2pchat relies on (written for "
            f"py-libp2p {WRITTEN_FOR}; see p2pchat/net/compat.py and docs/ARCHITECTURE.md §8):"
            f"\n{lines}"
        )


# --- the patches ---------------------------------------------------------------------------


def install_lean_yamux() -> None:
    """§8 ``yamux``: py-libp2p builds every Yamux connection from the module global
    ``muxer_multistream.Yamux`` whatever ``muxer_opt`` says; point it at ``LeanYamux``
    (p2pchat's own Yamux: enforced windows and stream cap, one writer, cancel-safe frames,
    a fraction of the stock one's CPU per byte). Idempotent."""
    setattr(muxer_multistream, "Yamux", LeanYamux)  # noqa: B010 - module global, on purpose


def install_tcp_tuning() -> None:
    """§8 ``tcp_tuning``: py-libp2p's TCP transport wraps every accepted and dialled socket
    in its module global ``TrioTCPStream``; point it at ``TunedTCPStream`` (little unsent
    data per socket, so small frames do not queue behind bulk). Idempotent."""
    setattr(libp2p_tcp, "TrioTCPStream", TunedTCPStream)  # noqa: B010 - module global, on purpose


def replace_dial_peer(
    swarm: Swarm, dial: Callable[[ID], Coroutine[Any, Any, list[INetConn]]]
) -> None:
    """§8 ``Network.dial_known``: ``Swarm.dial_peer`` waits its 250 ms happy-eyeballs delay
    even after a success, dials one TCP address and drops circuits; every dial by peer ID
    (``host.connect``, ``new_stream``, so the DHT's) goes through ``dial`` instead."""
    swarm.dial_peer = dial  # type: ignore[method-assign,assignment]


def gate_inbound(swarm: Swarm, admit: Callable[[str], bool]) -> None:
    """§8 ``Network.__init__`` (kept-away peers): close an inbound connection whose remote IP
    ``admit`` refuses before its handshake; py-libp2p's own ``ConnectionGate`` has only static
    allow and deny lists."""
    handle = swarm._do_handle_inbound_connection

    async def _do_handle_inbound_connection(
        read_write_closer: Any, maddr: Any, failure_event: Any
    ) -> None:
        try:
            remote = read_write_closer.get_remote_address()
        except Exception:
            remote = None
        if remote is not None and not admit(str(remote[0])):
            with contextlib.suppress(Exception):
                await read_write_closer.close()
            return
        await handle(read_write_closer, maddr, failure_event)

    swarm._do_handle_inbound_connection = _do_handle_inbound_connection  # type: ignore[method-assign]


async def _no_auto_connect() -> None:
    return None


def disable_auto_connector(swarm: Swarm) -> None:
    """§8 ``net.Network.__init__`` (AutoConnector): it dials peerstore strangers every 30 s
    up to ~150 connections; p2pchat connects only with a purpose, so its ``maybe_connect``
    does nothing."""
    swarm.auto_connector.maybe_connect = _no_auto_connect  # type: ignore[method-assign]


def disable_dial_retries(swarm: Swarm) -> None:
    """§8 ``Network.__init__``: retries belong to the links' backoff (:mod:`p2pchat.net.link`),
    not to each dial."""
    swarm.retry_config = RetryConfig(max_retries=0)


def set_dht_protocol(protocol_id: str) -> None:
    """§8 ``kad.use_protocol``: the Kad-DHT protocol ID is a constant that five modules read
    from their own globals; set it in all of them (before a DHT is built)."""
    for module in DHT_PROTOCOL_MODULES:
        setattr(module, "PROTOCOL_ID", TProtocol(protocol_id))  # noqa: B010 - module global


def dht_protocol() -> str:
    """The Kad-DHT protocol ID this process speaks (see :func:`set_dht_protocol`)."""
    return str(kad_common.PROTOCOL_ID)


def limit_value_store(max_records: int) -> None:
    """§8 ``kad.OverlayDHT.__init__``: the value store holds up to 50,000 records for others
    by default; lower the cap its eviction reads from ``value_store``'s globals."""
    setattr(kad_values, "MAX_VALUE_STORE_SIZE", max_records)  # noqa: B010 - module global


async def get_value_from_peer(store: ValueStore, peer: ID, key: bytes) -> bytes | None:
    """§8 ``kad.OverlayDHT.get_newest``: ask one peer for ``key`` (the library's private
    one-peer GET_VALUE; ``get_value`` trusts any local copy and caches for 24 h)."""
    result = await store._get_from_peer(peer, key)
    return result if isinstance(result, bytes) else None


async def _no_auto_drive() -> None:
    await trio.sleep_forever()


def disable_dcutr_auto_drive(dcutr: DCUtRProtocol) -> None:
    """§8 ``relay.Relays._punch_loop``: DCUtR's auto-drive loop punches from both peers at
    once (the dials collide) and gives up after three attempts; ``_punch_loop`` drives
    hole punches instead. Call before the service runs (``run()`` starts the loop)."""
    dcutr._auto_drive_loop = _no_auto_drive  # type: ignore[method-assign]


def police_hole_punch_dials(
    dcutr: DCUtRProtocol, may_dial: Callable[[ID, Multiaddr], bool]
) -> None:
    """§8 ``relay.Relays.run``: DCUtR dials what the peer says in its CONNECT message and what
    the peerstore holds (both the peer's own word) from its unilateral upgrade and its hole
    punch, all through ``_dial_peer``; each dial now first asks ``may_dial`` (the announced
    address policy), and a refused address is skipped as if it had not answered."""
    dial = dcutr._dial_peer

    async def _dial_peer(
        peer_id: ID,
        addr: Multiaddr,
        source: tuple[str, int] | None = None,
        as_responder: bool = False,
    ) -> None:
        if not may_dial(peer_id, addr):
            log.info("hole punch: not dialing %s for %s (address policy)", addr, peer_id)
            return
        await dial(peer_id, addr, source, as_responder)

    dcutr._dial_peer = _dial_peer  # type: ignore[method-assign]


def reset_hole_punch_budget(dcutr: DCUtRProtocol, peer_id: ID) -> None:
    """§8 ``relay.Relays._punch_loop``: DCUtR refuses a peer after three attempts; our loop
    paces its own retries, so each of them starts with a fresh budget."""
    dcutr._hole_punch_attempts.pop(peer_id, None)


async def make_reservation(transport: CircuitV2Transport, stream: INetStream, relay: ID) -> bool:
    """§8 ``relay.Relays._reserve``: ``RelayDiscovery`` reserves once at start-up and never
    renews; we reserve on our own schedule through the transport's private request."""
    return await transport._make_reservation(stream, relay)


def disable_hop(protocol: CircuitV2Protocol) -> None:
    """``relay.Relays.stop_serving`` removed the HOP handler itself (the daemon is behind a
    NAT); mark the protocol as no longer relaying, so its shutdown does not remove the
    handler again and ``stop_serving`` stays idempotent."""
    protocol.allow_hop = False


def register_mdns(mdns: MDNSDiscovery) -> None:
    """§8 ``lan.LanDiscovery``: announce on the LAN without ``MDNSDiscovery.start()``,
    which would also start the cleanup task that forgets a peer's addresses minutes after
    discovery. Blocking (zeroconf): run it in a worker thread."""
    mdns.broadcaster.register()


def observed_addr_manager(host: IHost) -> ObservedAddrManager | None:
    """Identify's record of the addresses peers observe us at (``None`` when the host was
    built without address discovery); py-libp2p keeps it private to ``BasicHost``."""
    return cast(BasicHost, host)._observed_addr_manager


# --- the contracts -------------------------------------------------------------------------


class Contract(ABC):
    """One thing p2pchat relies on in py-libp2p; :meth:`problem` is ``None`` when it holds."""

    module: str
    reason: str

    @property
    @abstractmethod
    def symbol(self) -> str:
        """The py-libp2p symbol, dotted (``module.Class.name``)."""

    @property
    @abstractmethod
    def expected(self) -> str:
        """What the symbol must be, in words."""

    @property
    def key(self) -> str:
        """Unique among :data:`CONTRACTS` (a test ID)."""
        return self.symbol

    @abstractmethod
    def _problem(self) -> str | None: ...

    def problem(self) -> str | None:
        """What is wrong with the symbol in the installed py-libp2p, or ``None``."""
        try:
            return self._problem()
        except (ImportError, AttributeError) as exc:
            return f"not found ({exc})"


def _resolve(module: str, qualname: str) -> object:
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _code_objects(code: CodeType) -> Iterator[CodeType]:
    """``code`` and the code of every function, comprehension or lambda nested in it."""
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _code_objects(const)


def _code_of(obj: object) -> CodeType | None:
    func = inspect.unwrap(obj) if callable(obj) else obj
    code = getattr(func, "__code__", None)  # our own probe: builtins and slots have none
    return code if isinstance(code, CodeType) else None


def _names_used(code: CodeType) -> set[str]:
    """Global and attribute names the code (and code nested in it) looks up or assigns."""
    return {name for c in _code_objects(code) for name in c.co_names}


def _attributes_stored(code: CodeType) -> set[str]:
    return {
        str(ins.argval)
        for c in _code_objects(code)
        for ins in dis.get_instructions(c)
        if ins.opname == "STORE_ATTR"
    }


@dataclass(frozen=True)
class Constant(Contract):
    """A module global of a given type (one we set, or read)."""

    module: str
    name: str
    _: KW_ONLY
    kind: type
    reason: str

    @property
    def symbol(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def expected(self) -> str:
        return f"a module constant of type {self.kind.__name__}"

    def _problem(self) -> str | None:
        value = _resolve(self.module, self.name)
        if inspect.isclass(value) or inspect.isroutine(value) or not isinstance(value, self.kind):
            return f"found {value!r} ({type(value).__name__})"
        return None


@dataclass(frozen=True)
class Class(Contract):
    """A class (optionally one that is, or derives from, another py-libp2p class)."""

    module: str
    name: str
    _: KW_ONLY
    subclass_of: tuple[str, str] | None = None
    reason: str

    @property
    def symbol(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def expected(self) -> str:
        if self.subclass_of is None:
            return "a class"
        return f"{'.'.join(self.subclass_of)} or a subclass of it"

    def _problem(self) -> str | None:
        value = _resolve(self.module, self.name)
        if not inspect.isclass(value):
            return f"found {value!r} ({type(value).__name__}), not a class"
        if self.subclass_of is not None:
            base = _resolve(*self.subclass_of)
            if not inspect.isclass(base) or not issubclass(value, base):
                return f"found {value!r}"
        return None


_POSITIONAL: Final = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_BY_KEYWORD: Final = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_VARIADIC: Final = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


@dataclass(frozen=True)
class Function(Contract):
    """A function or method (``qualname`` ``Class.method``; ``self`` is not listed).

    ``args``: the leading positional parameters, in order (we pass them positionally);
    ``keywords``: parameters we pass by name (shown as ``name=``). Every other parameter must
    have a default.
    ``exact``: the parameters are exactly ``args`` then ``keywords`` (a method we override
    or replace, whose signature ours copies; ``ours`` names our version, for the tests).
    ``coroutine``: whether it must be ``async def`` (``None``: either)."""

    module: str
    qualname: str
    _: KW_ONLY
    args: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    exact: bool = False
    coroutine: bool | None = None
    ours: str | None = None
    reason: str

    @property
    def symbol(self) -> str:
        return f"{self.module}.{self.qualname}"

    @property
    def expected(self) -> str:
        kind = "a function"
        if self.coroutine is not None:
            kind = "an async function" if self.coroutine else "a plain (not async) function"
        params = ", ".join([*self.args, *(f"{k}=" for k in self.keywords)])
        return f"{kind} {'taking exactly' if self.exact else 'accepting'} ({params})"

    def _problem(self) -> str | None:
        func = _resolve(self.module, self.qualname)
        if not callable(func) or inspect.isclass(func):
            return f"found {func!r}, not a function"
        if getattr(func, "__isabstractmethod__", False):  # the abc protocol, not a private name
            return f"found only the abstract declaration {func!r}"
        if self.coroutine is not None and inspect.iscoroutinefunction(func) != self.coroutine:
            return f"found {'an async' if not self.coroutine else 'a plain'} function"
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError):
            return f"found {func!r}, whose signature cannot be read"
        params = list(signature.parameters.values())
        if "." in self.qualname and params and params[0].name == "self":
            params = params[1:]
        found = f"found {signature.replace(parameters=params)}"
        positional = [p.name for p in params if p.kind in _POSITIONAL]
        if positional[: len(self.args)] != list(self.args):
            return found
        by_name = {p.name: p for p in params}
        if any(k not in by_name or by_name[k].kind not in _BY_KEYWORD for k in self.keywords):
            return found
        if self.exact:
            if [p.name for p in params] != [*self.args, *self.keywords]:
                return found
        else:
            ours = {*self.args, *self.keywords}
            required = [
                p.name
                for p in params
                if p.name not in ours and p.kind not in _VARIADIC and p.default is p.empty
            ]
            if required:
                return f"{found}: also requires {', '.join(required)}"
        return None


@dataclass(frozen=True)
class Attribute(Contract):
    """An instance attribute that ``cls.set_in`` assigns (``only_there``: no other method of
    the class assigns it, so a value we put there after that method stays)."""

    module: str
    cls: str
    name: str
    _: KW_ONLY
    set_in: str = "__init__"
    only_there: bool = False
    reason: str

    @property
    def symbol(self) -> str:
        return f"{self.module}.{self.cls}.{self.name}"

    @property
    def expected(self) -> str:
        where = f"an instance attribute assigned in {self.cls}.{self.set_in}"
        return f"{where} and nowhere else in {self.cls}" if self.only_there else where

    def _problem(self) -> str | None:
        cls = _resolve(self.module, self.cls)
        if not inspect.isclass(cls):
            return f"found {cls!r}, not a class"
        code = _code_of(inspect.getattr_static(cls, self.set_in))
        if code is None or self.name not in _attributes_stored(code):
            return f"{self.cls}.{self.set_in} does not assign self.{self.name}"
        if self.only_there:
            others = sorted(
                member
                for member, value in vars(cls).items()
                if member != self.set_in
                and (other := _code_of(_function_of(value))) is not None
                and self.name in _attributes_stored(other)
            )
            if others:
                return f"also assigned in {', '.join(others)}"
        return None


def _function_of(member: object) -> object:
    if isinstance(member, staticmethod | classmethod):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    return member


@dataclass(frozen=True)
class LooksUp(Contract):
    """A function whose code looks ``name`` up (a global, or an attribute) each time it runs,
    so the value we put there is the one it uses (``absent``: its code never uses ``name``)."""

    module: str
    qualname: str
    name: str
    _: KW_ONLY
    absent: bool = False
    reason: str

    @property
    def symbol(self) -> str:
        return f"{self.module}.{self.qualname}"

    @property
    def key(self) -> str:
        return f"{self.symbol}[{'not ' if self.absent else ''}{self.name}]"

    @property
    def expected(self) -> str:
        if self.absent:
            return f"code that never uses {self.name!r}"
        return f"code that looks up {self.name!r} when it runs"

    def _problem(self) -> str | None:
        code = _code_of(_resolve(self.module, self.qualname))
        if code is None:
            return "found no Python code to inspect"
        used = self.name in _names_used(code)
        if used == self.absent:
            return f"it {'uses' if used else 'does not use'} {self.name!r}"
        return None


@dataclass(frozen=True)
class HeldOnlyBy(Contract):
    """Exactly ``modules`` of ``package`` (imported) have a global ``name``: a patch that sets
    it in each of them misses none."""

    module: str  # the package
    name: str
    _: KW_ONLY
    modules: tuple[str, ...]
    reason: str

    @property
    def symbol(self) -> str:
        return f"{self.module}.*.{self.name}"

    @property
    def expected(self) -> str:
        return f"{self.name} held by exactly {', '.join(self.modules)}"

    def _problem(self) -> str | None:
        package = importlib.import_module(self.module)
        holders = set()
        for info in pkgutil.iter_modules(package.__path__, prefix=f"{self.module}."):
            if self.name in vars(importlib.import_module(info.name)):
                holders.add(info.name)
        if holders != set(self.modules):
            return f"held by {', '.join(sorted(holders)) or 'none'}"
        return None


_MULTISTREAM: Final = "libp2p.stream_muxer.muxer_multistream"
_SWARM: Final = "libp2p.network.swarm"
_TCP: Final = "libp2p.transport.tcp.tcp"
_AUTO: Final = "libp2p.network.auto_connector"
_KAD: Final = "libp2p.kad_dht"
_RELAY: Final = "libp2p.relay.circuit_v2"
_MDNS: Final = "libp2p.discovery.mdns"

CONTRACTS: Final[tuple[Contract, ...]] = (
    # §8 yamux: compat.install_lean_yamux
    Class(
        _MULTISTREAM,
        "Yamux",
        subclass_of=("libp2p.abc", "IMuxedConn"),
        reason="install_lean_yamux points this module global at LeanYamux",
    ),
    LooksUp(
        _MULTISTREAM,
        "MuxerMultistream.new_conn",
        "Yamux",
        reason="new_conn builds Yamux connections from that global, so the patch takes effect",
    ),
    # §8 tcp_tuning: compat.install_tcp_tuning
    Class(
        _TCP,
        "TrioTCPStream",
        subclass_of=("libp2p.io.trio", "TrioTCPStream"),
        reason="install_tcp_tuning points this module global at TunedTCPStream",
    ),
    LooksUp(
        _TCP,
        "TCPListener.listen",
        "TrioTCPStream",
        reason="accepted connections are wrapped in that global, so the patch takes effect",
    ),
    LooksUp(
        _TCP,
        "TCP._dial_resolved",
        "TrioTCPStream",
        reason="dialled connections are wrapped in that global, so the patch takes effect",
    ),
    Function(
        "libp2p.io.trio",
        "TrioTCPStream.__init__",
        args=("stream",),
        exact=True,
        coroutine=False,
        ours="p2pchat.net.tcp_tuning:TunedTCPStream.__init__",
        reason="TunedTCPStream takes the trio.SocketStream it wraps, as the library does",
    ),
    # §8 net.build_host
    Function(
        "libp2p",
        "new_host",
        keywords=("key_pair", "sec_opt", "muxer_opt"),
        reason="build_host passes Noise alone as sec_opt and LeanYamux as muxer_opt",
    ),
    Attribute(
        "libp2p.network.swarm",
        "Swarm",
        "connections",
        reason="LeanYamux waits until the swarm lists a connection before saying it ended",
    ),
    Attribute(
        "libp2p.network.connection.swarm_connection",
        "SwarmConn",
        "muxed_conn",
        reason="how LeanYamux finds itself among the swarm's connections",
    ),
    # §8 noise_session: LeanNoiseTransport, LeanNoiseSession
    Function(
        "libp2p.security.noise.transport",
        "Transport.secure_inbound",
        args=("conn",),
        exact=True,
        coroutine=True,
        ours="p2pchat.net.noise_session:LeanNoiseTransport.secure_inbound",
        reason="LeanNoiseTransport runs the stock handshake, then takes the session over",
    ),
    Function(
        "libp2p.security.noise.transport",
        "Transport.secure_outbound",
        args=("conn", "peer_id"),
        exact=True,
        coroutine=True,
        ours="p2pchat.net.noise_session:LeanNoiseTransport.secure_outbound",
        reason="LeanNoiseTransport runs the stock handshake, then takes the session over",
    ),
    Attribute(
        "libp2p.security.noise.io",
        "NoiseTransportReadWriter",
        "noise_state",
        reason="LeanNoiseSession takes the handshake's cipher states from it",
    ),
    Attribute(
        "noise.noise_protocol",
        "NoiseProtocol",
        "name",
        reason="LeanNoiseSession takes over only Noise_XX_25519_ChaChaPoly_SHA256 sessions",
    ),
    Attribute(
        "noise.state",
        "CipherState",
        "k",
        set_in="initialize_key",
        reason="the key of each direction LeanNoiseSession seals and opens with",
    ),
    Attribute(
        "noise.state",
        "CipherState",
        "n",
        set_in="initialize_key",
        reason="the nonce each direction continues from",
    ),
    Attribute(
        "noise.noise_protocol",
        "NoiseProtocol",
        "cipher_state_encrypt",
        reason="where the handshake's split() leaves the sending direction's cipher state",
    ),
    Attribute(
        "noise.noise_protocol",
        "NoiseProtocol",
        "cipher_state_decrypt",
        reason="where the handshake's split() leaves the receiving direction's cipher state",
    ),
    Function(
        "libp2p.security.noise.transport",
        "Transport.__init__",
        args=("libp2p_keypair",),
        keywords=("noise_privkey",),
        reason="build_host builds the Noise transport with a fresh X25519 static key",
    ),
    # §8 net.Network.dial / dial_known / connect_addr
    Function(
        _SWARM,
        "Swarm.dial_peer",
        args=("peer_id",),
        exact=True,
        coroutine=True,
        ours="p2pchat.net.host:Network.dial_known",
        reason="replace_dial_peer replaces it on the swarm with Network.dial_known",
    ),
    LooksUp(
        _SWARM,
        "Swarm.new_stream",
        "dial_peer",
        reason="new_stream (so the DHT) dials through self.dial_peer, our replacement",
    ),
    LooksUp(
        "libp2p.host.basic_host",
        "BasicHost.connect",
        "dial_peer",
        reason="host.connect dials through the swarm's dial_peer, our replacement",
    ),
    # §8 net.Network.__init__ (kept-away peers): compat.gate_inbound
    Function(
        _SWARM,
        "Swarm._do_handle_inbound_connection",
        args=("read_write_closer", "maddr", "failure_event"),
        exact=True,
        coroutine=True,
        reason="gate_inbound wraps it on the swarm to close throttled connections first",
    ),
    LooksUp(
        _SWARM,
        "Swarm._handle_inbound_connection",
        "_do_handle_inbound_connection",
        reason="each inbound connection is handled through self._do_handle_inbound_connection",
    ),
    Function(
        "libp2p.io.trio",
        "TrioTCPStream.get_remote_address",
        exact=True,
        coroutine=False,
        reason="gate_inbound reads the remote (IP, port) of each inbound TCP connection",
    ),
    # §8 net.Network.__init__ (AutoConnector)
    Attribute(
        _SWARM,
        "Swarm",
        "auto_connector",
        set_in="_init_connection_management",
        reason="disable_auto_connector neuters its maybe_connect",
    ),
    Function(
        _AUTO,
        "AutoConnector.maybe_connect",
        exact=True,
        coroutine=True,
        ours="p2pchat.net.compat:_no_auto_connect",
        reason="disable_auto_connector replaces it on the instance with a no-op",
    ),
    LooksUp(
        _AUTO,
        "AutoConnector._periodic_check_task",
        "maybe_connect",
        reason="the 30 s loop calls self.maybe_connect, our no-op",
    ),
    LooksUp(
        _SWARM,
        "Swarm._schedule_auto_connect",
        "maybe_connect",
        reason="connection events call auto_connector.maybe_connect, our no-op",
    ),
    # §8 net.Network.__init__ (retries)
    Attribute(
        _SWARM,
        "Swarm",
        "retry_config",
        reason="disable_dial_retries sets RetryConfig(max_retries=0)",
    ),
    Function(
        "libp2p.network.config",
        "RetryConfig.__init__",
        keywords=("max_retries",),
        reason="disable_dial_retries builds RetryConfig(max_retries=0)",
    ),
    LooksUp(
        _SWARM,
        "Swarm._dial_with_retry",
        "retry_config",
        reason="each dial reads the swarm's retry_config when it runs",
    ),
    # §8 kad.use_protocol
    *(
        Constant(
            f"{_KAD}.{name}",
            "PROTOCOL_ID",
            kind=str,
            reason="set_dht_protocol sets the DHT protocol ID here",
        )
        for name in ("common", "kad_dht", "peer_routing", "value_store", "provider_store")
    ),
    HeldOnlyBy(
        _KAD,
        "PROTOCOL_ID",
        modules=tuple(m.__name__ for m in DHT_PROTOCOL_MODULES),
        reason="set_dht_protocol misses no module that keeps its own copy",
    ),
    # §8 kad.OverlayDHT.__init__
    Constant(
        f"{_KAD}.value_store",
        "MAX_VALUE_STORE_SIZE",
        kind=int,
        reason="limit_value_store lowers it to kad.MAX_STORED_RECORDS",
    ),
    LooksUp(
        f"{_KAD}.value_store",
        "ValueStore._evict_if_full",
        "MAX_VALUE_STORE_SIZE",
        reason="eviction reads the cap from value_store's globals when it runs",
    ),
    Function(
        f"{_KAD}.kad_dht",
        "KadDHT.__init__",
        args=("host", "mode"),
        keywords=("validator", "validator_changed", "strict_validation"),
        reason="OverlayDHT passes its strict p2pchat-only validator",
    ),
    # §8 kad.OverlayDHT.add_peer
    Function(
        f"{_KAD}.kad_dht",
        "KadDHT.add_peer",
        args=("peer_id",),
        keywords=("skip_server_mode_check",),
        exact=True,
        coroutine=True,
        ours="p2pchat.net.kad:OverlayDHT.add_peer",
        reason="OverlayDHT overrides it to admit only peers that serve our DHT",
    ),
    LooksUp(
        f"{_KAD}.kad_dht",
        "KadDHT._do_handle_stream",
        "add_peer",
        reason="peers that open a DHT stream are added through self.add_peer, our override",
    ),
    # §8 kad.OverlayDHT.get_newest
    Function(
        f"{_KAD}.value_store",
        "ValueStore._get_from_peer",
        args=("peer_id", "key"),
        coroutine=True,
        reason="get_value_from_peer asks one peer for a record",
    ),
    # §8 relay.IsolatedCircuitRelay
    Function(
        f"{_RELAY}.protocol",
        "CircuitV2Protocol._relay_data",
        args=("src_stream", "dst_stream", "peer_id", "deadline", "circuit_data_limit"),
        exact=True,
        coroutine=True,
        ours="p2pchat.net.relay:IsolatedCircuitRelay._relay_data",
        reason="IsolatedCircuitRelay overrides it to key each circuit direction on its own",
    ),
    LooksUp(
        f"{_RELAY}.protocol",
        "CircuitV2Protocol._handle_connect",
        "_relay_data",
        reason="circuits are relayed through self._relay_data, our override",
    ),
    Attribute(
        f"{_RELAY}.protocol",
        "CircuitV2Protocol",
        "_active_relays",
        reason="IsolatedCircuitRelay keys its circuits in this dict",
    ),
    # §8 relay.IsolatedCircuitRelay._handle_reserve (reservations per IP)
    Function(
        f"{_RELAY}.protocol",
        "CircuitV2Protocol._handle_reserve",
        args=("stream", "msg"),
        exact=True,
        coroutine=True,
        ours="p2pchat.net.relay:IsolatedCircuitRelay._handle_reserve",
        reason="IsolatedCircuitRelay overrides it to cap reservations per remote IP",
    ),
    LooksUp(
        f"{_RELAY}.protocol",
        "CircuitV2Protocol._handle_hop_stream",
        "_handle_reserve",
        reason="RESERVE messages are handled through self._handle_reserve, our override",
    ),
    Attribute(
        f"{_RELAY}.protocol",
        "CircuitV2Protocol",
        "resource_manager",
        reason="the per-IP cap asks it whether a counted reservation is still held",
    ),
    Attribute(
        f"{_RELAY}.protocol",
        "CircuitV2Protocol",
        "allow_hop",
        reason="disable_hop clears it when the daemon stops relaying for others",
    ),
    # §8 relay.Relays._punch_loop
    Function(
        f"{_RELAY}.dcutr",
        "DCUtRProtocol._auto_drive_loop",
        exact=True,
        coroutine=True,
        ours="p2pchat.net.compat:_no_auto_drive",
        reason="disable_dcutr_auto_drive replaces it on the instance",
    ),
    LooksUp(
        f"{_RELAY}.dcutr",
        "DCUtRProtocol.run",
        "_auto_drive_loop",
        reason="run() starts self._auto_drive_loop, our replacement",
    ),
    Function(
        f"{_RELAY}.dcutr",
        "DCUtRProtocol._dial_peer",
        args=("peer_id", "addr", "source", "as_responder"),
        exact=True,
        coroutine=True,
        reason="police_hole_punch_dials wraps it on the instance, passing all four",
    ),
    LooksUp(
        f"{_RELAY}.dcutr",
        "DCUtRProtocol._perform_hole_punch",
        "_dial_peer",
        reason="the hole punch dials through self._dial_peer, our wrapper",
    ),
    LooksUp(
        f"{_RELAY}.dcutr",
        "DCUtRProtocol._try_unilateral_upgrade",
        "_dial_peer",
        reason="the unilateral upgrade dials through self._dial_peer, our wrapper",
    ),
    Attribute(
        f"{_RELAY}.dcutr",
        "DCUtRProtocol",
        "_hole_punch_attempts",
        reason="reset_hole_punch_budget pops a peer from it",
    ),
    # §8 relay.Relays._reserve
    Function(
        f"{_RELAY}.transport",
        "CircuitV2Transport._make_reservation",
        args=("stream", "relay_peer_id"),
        coroutine=True,
        reason="make_reservation reserves a slot on our own schedule",
    ),
    # §8 lan.LanDiscovery (mDNS)
    Function(
        f"{_MDNS}.mdns",
        "MDNSDiscovery.__init__",
        args=("swarm",),
        keywords=("port", "listen_addrs", "service_type", "host"),
        reason="LanDiscovery.run builds it with our service name and LAN addresses",
    ),
    LooksUp(
        f"{_MDNS}.mdns",
        "MDNSDiscovery.__init__",
        "spawn_system_task",
        absent=True,
        reason="building it starts no cleanup task (only start(), which we never call)",
    ),
    Attribute(
        f"{_MDNS}.mdns",
        "MDNSDiscovery",
        "broadcaster",
        reason="register_mdns registers through it instead of calling start()",
    ),
    Function(
        f"{_MDNS}.broadcaster",
        "PeerBroadcaster.register",
        exact=True,
        coroutine=False,
        reason="register_mdns calls it in a worker thread (zeroconf blocks)",
    ),
    Function(
        f"{_MDNS}.mdns",
        "MDNSDiscovery.stop",
        exact=True,
        coroutine=False,
        reason="LanDiscovery.run stops it in a worker thread (zeroconf blocks)",
    ),
    # §5b reachability, §8 call candidates: identify's observed addresses
    Attribute(
        "libp2p.host.basic_host",
        "BasicHost",
        "_observed_addr_manager",
        reason="observed_addr_manager reads it for NAT detection and public IPs",
    ),
    Function(
        "libp2p.host.observed_addr_manager",
        "ObservedAddrManager.addrs",
        keywords=("min_observers",),
        reason="Discovery._observed_addrs asks for addresses seen by enough peers",
    ),
)
"""Everything p2pchat relies on in py-libp2p beyond its public API (see module doc)."""


def check(contracts: Sequence[Contract] = CONTRACTS) -> None:
    """Verify every contract; raise :class:`LibraryMismatch` listing each one that fails."""
    problems = [(c.symbol, c.expected, p) for c in contracts if (p := c.problem()) is not None]
    if problems:
        raise LibraryMismatch(libp2p_version(), problems)
