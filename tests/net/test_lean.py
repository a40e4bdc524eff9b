"""The daemon's lean import of py-libp2p (p2pchat/net/lean.py).

Each check runs in a fresh interpreter: this test process has imported libp2p for real."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def run_python(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


BUILD_HOST = """
    import json, sys
    {install}
    import p2pchat.node, daemon.control  # everything the daemon imports
    from p2pchat.identity import Identity
    from p2pchat.net.host import build_host
    host = build_host(Identity.generate())
    def real(name):
        module = sys.modules.get(name)
        return module is not None and getattr(module, "__file__", None) is not None
    print(json.dumps({{
        "modules": len(sys.modules),
        "host": type(host).__name__,
        "real": {{n: real(n) for n in (
            "aioquic", "libp2p.transport.quic.transport", "libp2p.security.tls.transport",
            "libp2p.security.secio.transport", "prometheus_client", "httpx",
            "libp2p.transport.websocket.transport", "libp2p.bitswap.client",
            "libp2p.bitswap.cid", "libp2p.security.noise.transport",
            "libp2p.stream_muxer.yamux.yamux", "libp2p.kad_dht.kad_dht",
            "libp2p.relay.circuit_v2.dcutr", "zeroconf", "multiaddr.resolvers.dns",
        )}},
    }}))
"""


def test_the_daemon_builds_its_host_without_the_unused_parts_of_libp2p() -> None:
    lean = run_python(BUILD_HOST.format(install="from p2pchat.net import lean; lean.install()"))
    full = run_python(BUILD_HOST.format(install=""))
    assert lean["host"] == full["host"] == "BasicHost"
    real = lean["real"]
    assert isinstance(real, dict)
    left_out = [
        "aioquic",
        "libp2p.transport.quic.transport",
        "libp2p.security.tls.transport",
        "libp2p.security.secio.transport",
        "prometheus_client",
        "httpx",
        "libp2p.transport.websocket.transport",
        "libp2p.bitswap.client",
    ]
    assert [name for name in left_out if real[name]] == []
    # What the daemon runs is the real thing: Noise, Yamux, the DHT (and the CID parser it
    # needs), DCUtR, mDNS and DNS name resolution.
    kept = [name for name in real if name not in left_out]
    assert [name for name in kept if not real[name]] == []
    full_real = full["real"]
    assert isinstance(full_real, dict) and all(full_real.values())
    assert isinstance(lean["modules"], int) and isinstance(full["modules"], int)
    assert lean["modules"] < full["modules"] - 150


def test_using_a_left_out_part_fails_with_a_clear_error() -> None:
    result = run_python("""
        import json
        from p2pchat.net import lean
        lean.install()
        import libp2p
        from libp2p.transport.quic.transport import QUICTransport
        from libp2p.transport.quic.config import QUICTransportConfig
        errors = []
        for attempt in (lambda: QUICTransport(None), lambda: QUICTransport.listen,
                        lambda: libp2p.new_host(enable_quic=True)):
            try:
                attempt()
                errors.append(None)
            except lean.UnusedModule as exc:
                errors.append(str(exc))
        try:
            raise ValueError("x")
        except QUICTransportConfig:  # a placeholder in an except clause matches nothing
            caught = "placeholder"
        except ValueError:
            caught = "ValueError"
        import inspect
        probes = [hasattr(QUICTransport, "__wrapped__"),
                  inspect.unwrap(QUICTransport) is QUICTransport]
        print(json.dumps({"errors": errors, "caught": caught, "probes": probes,
                          "isinstance": isinstance(object(), QUICTransportConfig)}))
    """)
    errors = result["errors"]
    assert isinstance(errors, list) and len(errors) == 3
    assert "QUICTransport(): py-libp2p's QUIC transport" in errors[0]
    assert "QUICTransport.listen: py-libp2p's QUIC transport" in errors[1]
    # Stock new_host() offers TLS first: it names the first left-out part it reaches.
    assert "TLSTransport(): py-libp2p's TLS security" in errors[2]
    assert result["caught"] == "ValueError"
    assert result["isinstance"] is False
    # Dunder probes see a missing attribute, not an error.
    assert result["probes"] == [False, True]


def test_install_refuses_once_a_left_out_part_is_loaded_for_real() -> None:
    result = run_python("""
        import json
        import libp2p.security.tls.transport
        from p2pchat.net import lean
        try:
            lean.install()
            outcome = "installed"
        except RuntimeError as exc:
            outcome = str(exc)
        print(json.dumps({"outcome": outcome, "installed": lean.installed()}))
    """)
    assert "libp2p.security.tls" in str(result["outcome"])
    assert result["installed"] is False


def test_the_daemon_installs_it_before_libp2p_loads(tmp_path: Path) -> None:
    """The daemon's entry point installs it first: run with a passphrase file that does not
    exist, it stops before its network starts, with the placeholders in place."""
    result = run_python(f"""
        import json, sys
        import daemon.main
        assert "libp2p" not in sys.modules
        try:
            daemon.main.main(["--home", {str(tmp_path)!r}, "--log-level", "ERROR",
                              "--passphrase-file", "/nonexistent"])
        except SystemExit:
            pass
        from p2pchat.net import lean
        import libp2p  # what the daemon would load next
        aioquic = sys.modules.get("aioquic")
        print(json.dumps({{"installed": lean.installed(),
                          "aioquic": [aioquic is not None, getattr(aioquic, "__file__", None)]}}))
    """)
    # libp2p imports aioquic: as a placeholder (no file), not the real package.
    assert result == {"installed": True, "aioquic": [True, None]}
