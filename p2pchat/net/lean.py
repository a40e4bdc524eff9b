"""Keeps the parts of py-libp2p that p2pchat never runs out of the daemon's memory.

``import libp2p`` loads every transport, security protocol and exporter the package ships:
QUIC (aioquic), TLS with its ACME client (httpx, requests), secio, WebSocket and Prometheus
metrics, several hundred modules that a p2pchat daemon, which speaks only TCP, Noise and Yamux,
never runs. :func:`install`, called once before the first import of libp2p, serves each of
those packages as a placeholder module instead, without changing py-libp2p itself.

A placeholder has every name its importers ask for, so py-libp2p's own imports, type
annotations, ``isinstance`` checks and ``except`` clauses keep working; anything that tries
to *use* one (construct it, call it, read an attribute of it) raises :class:`UnusedModule`
naming the package, instead of failing somewhere obscure. The daemon's tests run with the
placeholders installed, so a path that needs one of them fails there.

Only the daemon process installs them (``daemon/main.py``); tests that build stock
py-libp2p hosts in-process see the real modules.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import Any, NoReturn

UNUSED: dict[str, str] = {
    "libp2p.transport.quic": "py-libp2p's QUIC transport (p2pchat listens and dials on TCP)",
    "aioquic": "aioquic (used only by QUIC transports)",
    "libp2p.security.tls": "py-libp2p's TLS security (p2pchat offers Noise only)",
    "libp2p.security.secio": "py-libp2p's secio security (p2pchat offers Noise only)",
    "libp2p.transport.websocket": "py-libp2p's WebSocket transport (p2pchat uses TCP)",
    "trio_websocket": "trio-websocket (used only by WebSocket transports)",
    "service_identity": "service-identity (used only by WebSocket transports' TLS)",
    "httpx": "httpx (used only by py-libp2p's AutoTLS certificate client)",
    "requests": "requests (used only by py-libp2p's AutoTLS certificate client)",
    "prometheus_client": "prometheus_client (p2pchat exports no Prometheus metrics)",
}
"""Package -> why p2pchat never needs it. Submodules are covered too."""

BARE_PACKAGES: dict[str, str] = {
    "libp2p.bitswap": "the Kademlia DHT needs only its CID parser (libp2p.bitswap.cid)",
}
"""Packages whose ``__init__`` (which imports all of bitswap's client, stores and payment
engines) is skipped: their submodules load for real, on demand."""


class UnusedModule(RuntimeError):
    """Something used a part of py-libp2p that the daemon does not load."""


class _PlaceholderMeta(type):
    def __getattr__(cls, name: str) -> NoReturn:
        if name.startswith("__"):
            # Protocol probes (inspect's __wrapped__, typing's __origin__, copy, pickle)
            # must see a plain missing attribute, as for any class.
            raise AttributeError(name)
        raise UnusedModule(f"{cls.__module__}.{cls.__name__}.{name}: {cls._why}")

    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise UnusedModule(f"{cls.__module__}.{cls.__name__}(): {cls._why}")


class _PlaceholderModule(types.ModuleType):
    """A module whose every public name is a placeholder class."""

    _why = ""

    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        # An Exception subclass, so ``except`` clauses and ``raise ... from`` stay valid.
        value = _PlaceholderMeta(
            name, (Exception,), {"_why": self._why, "__module__": self.__name__}
        )
        setattr(self, name, value)
        return value


def _covering(name: str) -> str | None:
    for package in UNUSED:
        if name == package or name.startswith(package + "."):
            return package
    return None


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname in BARE_PACKAGES:
            real = importlib.machinery.PathFinder.find_spec(fullname, path)
            if real is None or real.submodule_search_locations is None:
                return None
            bare = importlib.machinery.ModuleSpec(fullname, self, is_package=True)
            bare.submodule_search_locations = list(real.submodule_search_locations)
            return bare
        if _covering(fullname) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        if spec.name in BARE_PACKAGES:
            bare = types.ModuleType(spec.name, BARE_PACKAGES[spec.name])
            bare.__path__ = list(spec.submodule_search_locations or [])
            return bare
        module = _PlaceholderModule(spec.name)
        module.__path__ = []
        module._why = UNUSED[_covering(spec.name) or spec.name]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install() -> None:
    """Serve :data:`UNUSED` as placeholders from now on. Must run before anything imports
    libp2p; raises RuntimeError if one of them is already loaded for real."""
    if installed():
        return
    loaded = [
        m
        for m in sys.modules
        if _covering(m) and not isinstance(sys.modules[m], _PlaceholderModule)
    ]
    if loaded:
        raise RuntimeError(f"already imported, cannot be left out: {', '.join(sorted(loaded))}")
    sys.meta_path.insert(0, _PlaceholderFinder())


def installed() -> bool:
    """Whether :func:`install` has run in this process."""
    return any(isinstance(f, _PlaceholderFinder) for f in sys.meta_path)
