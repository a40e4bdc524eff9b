"""Discovery decisions without a network: reachability, dial order, what a record advertises,
sequence numbers, config validation, and the DHT record validator."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from libp2p.kad_dht.kad_dht import DHTMode
from libp2p.records.utils import InvalidRecordType

from p2pchat.config import ConfigError, bootstrap_problem, load_config
from p2pchat.identity import Identity
from p2pchat.net import kad, records
from p2pchat.net.host import MAX_DIAL_ADDRS, dial_order
from p2pchat.net.publishing import GROWN_TABLE, next_seq, table_grown
from p2pchat.net.reachability import advertised_addrs, behind_nat, initial_mode
from p2pchat.net.relay import _RELAY_BASE

BOOT = "/ip4/198.51.100.10/tcp/4001/p2p/12D3KooWDnsGYEnJ9jsWBLyqg993bdEQpP2Sotn5iSykjadJtBkE"
CIRCUIT = f"{BOOT}/p2p-circuit"


@pytest.mark.parametrize(
    ("listen", "mode"),
    [
        (["/ip4/127.0.0.1/tcp/1"], DHTMode.SERVER),  # a test network on loopback
        (["/ip4/10.0.1.2/tcp/1", "/ip4/127.0.0.1/tcp/1"], DHTMode.CLIENT),
        (["/ip4/192.168.1.5/tcp/1"], DHTMode.CLIENT),
        (["/ip4/100.64.3.3/tcp/1"], DHTMode.CLIENT),  # carrier-grade NAT
        (["/ip4/10.0.1.2/tcp/1", "/ip4/198.51.100.10/tcp/1"], DHTMode.SERVER),
        (["/ip4/203.0.113.5/tcp/1"], DHTMode.SERVER),
        ([], DHTMode.SERVER),
    ],
)
def test_initial_mode_follows_the_listen_addresses(listen: list[str], mode: DHTMode) -> None:
    assert initial_mode(listen) is mode


def test_behind_nat_when_peers_see_an_ip_we_do_not_have() -> None:
    listen = ["/ip4/10.0.1.2/tcp/4001"]
    assert behind_nat(listen, ["/ip4/198.51.100.1/tcp/55555"])
    assert not behind_nat(listen, ["/ip4/10.0.1.2/tcp/55555"])
    assert not behind_nat(listen, [])
    assert not behind_nat(["/ip4/127.0.0.1/tcp/1"], ["/ip4/127.0.0.1/tcp/2"])


def test_sequence_numbers_always_increase_even_if_the_clock_goes_back() -> None:
    assert next_seq(0, 1_000) == 1_000
    assert next_seq(5_000, 1_000) == 5_001
    seq = 0
    for now in [10, 20, 15, 15, 30, 5]:
        new = next_seq(seq, now)
        assert new > seq
        seq = new


def test_dial_order_puts_direct_before_relayed_and_drops_wildcards() -> None:
    addrs = [CIRCUIT, "/ip4/0.0.0.0/tcp/5", "/ip4/10.0.0.1/tcp/5", "/ip6/::/tcp/5", CIRCUIT]
    assert dial_order(addrs) == ["/ip4/10.0.0.1/tcp/5", CIRCUIT]
    many = [f"/ip4/203.0.113.{i}/tcp/1" for i in range(100)]
    assert dial_order(many) == many[:MAX_DIAL_ADDRS]


def test_advertised_addresses_depend_on_reachability() -> None:
    listen = ["/ip4/10.0.1.2/tcp/4001", "/ip4/127.0.0.1/tcp/4001"]
    assert advertised_addrs(listen, [CIRCUIT], public=False) == (CIRCUIT, listen[0])
    assert advertised_addrs(listen, [], public=True) == (listen[0],)
    # On a machine that listens on loopback only (a test network), loopback is all there is.
    assert advertised_addrs(listen[1:], [], public=True) == (listen[1],)
    many = [f"/ip4/10.0.0.{i}/tcp/1" for i in range(40)]
    assert len(advertised_addrs(many, [CIRCUIT], public=False)) == records.MAX_ADDRS_PER_DEVICE
    assert advertised_addrs(many, [CIRCUIT], public=False)[0] == CIRCUIT


def test_addresses_a_record_would_refuse_are_never_advertised() -> None:
    huge = "/ip4/198.51.100.10/tcp/4001/p2p/" + "x" * 300 + "/p2p-circuit"
    odd = "/ip4/10.0.0.1/tcp/1\n"
    assert advertised_addrs(["/ip4/10.0.0.1/tcp/1", odd], [huge], public=False) == (
        "/ip4/10.0.0.1/tcp/1",
    )


@pytest.mark.parametrize(
    ("addr", "ok"),
    [
        ("/ip4/198.51.100.10/tcp/4001", True),
        ("/ip6/2001:db8::1/tcp/4001", True),
        ("/ip4/198.51.100.10/tcp/4001/p2p/x", False),
        ("/dns4/relay.example/tcp/4001", False),
        ("/ip4/198.51.100.10/tcp/4001/" + "a" * 300, False),
    ],
)
def test_only_plain_relay_addresses_become_circuits(addr: str, ok: bool) -> None:
    assert bool(_RELAY_BASE.match(addr)) is ok


def test_bootstrap_addresses_are_checked() -> None:
    assert bootstrap_problem(BOOT) is None
    assert bootstrap_problem("/ip4/1.2.3.4/tcp/1") is not None
    assert bootstrap_problem("/ip4/1.2.3.4/tcp/1/p2p/notanid") is not None
    assert bootstrap_problem("1.2.3.4:4001") is not None


def _write(home: Path, **fields: object) -> None:
    (home / "config.json").write_text(json.dumps(fields))


def test_config_defaults_contact_nobody(tmp_path: Path) -> None:
    cfg = load_config(tmp_path)
    assert cfg.bootstrap == []
    assert cfg.dht_protocol == "/p2pchat/kad/1.0.0"
    assert cfg.dht_mode == "auto"
    assert cfg.relay_service == "auto"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"bootstrap": ["/ip4/1.2.3.4/tcp/1"]}, "bootstrap"),
        ({"bootstrap": "x"}, "bootstrap"),
        ({"dht_mode": "both"}, "dht_mode"),
        ({"relay_service": "yes"}, "relay_service"),
        ({"dht_protocol": "kad"}, "dht_protocol"),
        ({"mdns": "on"}, "mdns"),
        ({"relay_max_circuit_bytes": -1}, "relay_max_circuit_bytes"),
    ],
)
def test_bad_discovery_settings_are_refused_clearly(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    _write(tmp_path, **fields)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path)


def test_discovery_settings_round_trip(tmp_path: Path) -> None:
    _write(
        tmp_path,
        bootstrap=[BOOT],
        dht_protocol="/mynet/kad/1.0.0",
        dht_mode="client",
        mdns=False,
        relay_service="off",
        relay_max_reservations=3,
    )
    cfg = load_config(tmp_path)
    assert cfg.bootstrap == [BOOT]
    assert cfg.dht_protocol == "/mynet/kad/1.0.0"
    assert (cfg.dht_mode, cfg.mdns, cfg.relay_service) == ("client", False, "off")
    assert cfg.relay_max_reservations == 3
    assert cfg.to_json()["bootstrap"] == [BOOT]


def test_the_dht_validator_applies_the_record_rules() -> None:
    me, forger = Identity.generate(), Identity.generate()
    key = records.record_key(me.peer_id)
    now = int(time.time())
    device = (records.Device(me.peer_id, ("/ip4/10.0.0.1/tcp/1",)),)
    old = records.sign_record(me, 1, now + 600, device)
    new = records.sign_record(me, 2, now + 600, device)
    theirs = records.sign_record(forger, 9, now + 600, (records.Device(forger.peer_id, ()),))
    validator = kad.AddressRecordValidator()
    validator.validate(key, new)
    with pytest.raises(InvalidRecordType, match="signer"):
        validator.validate(key, theirs)
    with pytest.raises(InvalidRecordType, match="expired"):
        validator.validate(key, records.sign_record(me, 3, now - 1, device))
    # A DHT server holding ``old`` keeps it unless select() prefers the newcomer (index 1).
    assert validator.select(key, [old, new]) == 1
    assert validator.select(key, [new, old]) == 0


def test_use_protocol_switches_every_dht_module() -> None:
    before = kad.current_protocol()
    try:
        kad.use_protocol("/test/kad/9.9.9")
        from libp2p.kad_dht import common, kad_dht, peer_routing, provider_store, value_store

        for module in (common, kad_dht, peer_routing, provider_store, value_store):
            assert str(module.PROTOCOL_ID) == "/test/kad/9.9.9"  # type: ignore[attr-defined]
    finally:
        kad.use_protocol(before)


def test_the_record_is_stored_again_each_time_the_young_routing_table_doubles() -> None:
    assert table_grown(1, 2) and table_grown(2, 4) and table_grown(8, 16)
    assert not table_grown(2, 3) and not table_grown(5, 9)  # not yet doubled
    assert table_grown(0, 2) and not table_grown(0, 1)
    assert not table_grown(GROWN_TABLE, 4 * GROWN_TABLE)  # a full bucket: the schedule rules
