"""p2pchat.net.yamux.session: the Yamux protocol without I/O, byte for byte."""

from __future__ import annotations

import random

import pytest

from p2pchat.net.yamux import events as ev
from p2pchat.net.yamux import frames as fr
from p2pchat.net.yamux.session import MAX_FRAME_PAYLOAD, Session, YamuxProtocolError

KIB = 1024


def frame(kind: int, flags: int, sid: int, length: int, body: bytes = b"") -> bytes:
    return fr.encode(kind, flags, sid, length) + body


def out(session: Session) -> list[fr.Header]:
    """Every frame header queued so far (DATA payload skipped), emptying the queue."""
    data = session.data_to_send(1 << 30)
    headers = []
    at = 0
    while at < len(data):
        header = fr.decode(data, at)
        headers.append(header)
        at += fr.HEADER_SIZE + (header.length if header.type == fr.DATA else 0)
    assert at == len(data)
    return headers


def pair() -> tuple[Session, Session]:
    return Session(client=True), Session(client=False)


def pump(src: Session, dst: Session) -> list[ev.Event]:
    return dst.receive(src.data_to_send(1 << 30))


def opened(client: Session, server: Session) -> int:
    sid = client.open_stream()
    assert pump(client, server) == [ev.StreamOpened(sid)]
    assert pump(server, client) == []  # the ACK
    return sid


def test_client_and_server_open_odd_and_even_ids() -> None:
    client, server = pair()
    assert [client.open_stream(), client.open_stream()] == [1, 3]
    assert [server.open_stream(), server.open_stream()] == [2, 4]
    assert out(client) == [
        fr.Header(0, fr.WINDOW_UPDATE, fr.SYN, 1, 0),
        fr.Header(0, fr.WINDOW_UPDATE, fr.SYN, 3, 0),
    ]


def test_an_opened_stream_is_acknowledged() -> None:
    client, server = pair()
    sid = client.open_stream()
    assert pump(client, server) == [ev.StreamOpened(sid)]
    assert out(server) == [fr.Header(0, fr.WINDOW_UPDATE, fr.ACK, sid, 0)]


def test_data_flows_and_arrives_in_order() -> None:
    client, server = pair()
    sid = opened(client, server)
    payload = random.Random(1).randbytes(200 * KIB)
    assert client.send_data(sid, payload) == len(payload)
    got = b"".join(e.data for e in pump(client, server) if isinstance(e, ev.DataReceived))
    assert got == payload


def test_data_is_cut_into_frames_that_each_fill_one_noise_message() -> None:
    client, server = pair()
    sid = opened(client, server)
    client.send_data(sid, b"x" * (MAX_FRAME_PAYLOAD * 2 + 5))
    sizes = [h.length for h in out(client)]
    assert sizes == [MAX_FRAME_PAYLOAD, MAX_FRAME_PAYLOAD, 5]
    assert MAX_FRAME_PAYLOAD + fr.HEADER_SIZE == 65535 - 16


def test_data_split_at_every_byte_boundary_arrives_whole() -> None:
    """The secure channel may cut anywhere: inside a header, inside a payload."""
    client, _ = pair()
    sid = client.open_stream()
    client.send_data(sid, b"hello world")
    client.close_stream(sid)
    wire = client.data_to_send(1 << 20)
    for cut in range(1, len(wire)):
        _, receiver = pair()
        events = receiver.receive(wire[:cut]) + receiver.receive(wire[cut:])
        data = b"".join(e.data for e in events if isinstance(e, ev.DataReceived))
        assert data == b"hello world", cut
        assert events[0] == ev.StreamOpened(sid)
        assert events[-1] == ev.StreamEnded(sid)


def test_byte_at_a_time_delivery() -> None:
    client, server = pair()
    sid = client.open_stream()
    client.send_data(sid, b"abc")
    events: list[ev.Event] = []
    for byte in client.data_to_send(1 << 20):
        events += server.receive(bytes([byte]))
    assert b"".join(e.data for e in events if isinstance(e, ev.DataReceived)) == b"abc"


def test_sending_stops_at_the_window_and_resumes_when_granted() -> None:
    client, server = pair()
    sid = opened(client, server)
    assert client.send_data(sid, b"x" * (300 * KIB)) == fr.INITIAL_WINDOW
    assert client.send_data(sid, b"x") == 0
    assert client.send_window(sid) == 0
    pump(client, server)
    server.consumed(sid, 100 * KIB)  # less than half the window: no update yet
    assert out(server) == []
    server.consumed(sid, 28 * KIB)
    assert pump(server, client) == [ev.WindowOpened(sid)]
    assert client.send_window(sid) >= 128 * KIB


def test_a_reader_that_keeps_up_grows_the_window_to_the_cap() -> None:
    client, server = Session(client=True), Session(client=False, max_window=1024 * KIB)
    sid = opened(client, server)
    windows = []
    for _ in range(12):
        n = client.send_data(sid, b"x" * (4 * 1024 * KIB))
        for event in pump(client, server):
            if isinstance(event, ev.DataReceived):
                server.consumed(sid, len(event.data))
        pump(server, client)
        windows.append(n)
    assert windows[0] == fr.INITIAL_WINDOW
    assert max(windows) > 2 * fr.INITIAL_WINDOW  # more in flight per round trip...
    assert max(windows) <= 1024 * KIB  # ...never more than the cap
    assert server._streams[sid].window == 1024 * KIB


def test_a_stream_nobody_reads_never_holds_more_than_the_initial_window() -> None:
    client, server = pair()
    sid = opened(client, server)
    client.send_data(sid, b"x" * (10 * 1024 * KIB))
    pump(client, server)
    assert client.send_window(sid) == 0
    assert server._streams[sid].unconsumed == fr.INITIAL_WINDOW


def test_data_beyond_the_window_is_a_protocol_error() -> None:
    client, server = pair()
    sid = opened(client, server)
    client._streams[sid].send_window = 10 * fr.INITIAL_WINDOW  # a peer ignoring flow control
    client.send_data(sid, b"x" * (fr.INITIAL_WINDOW + 1))
    with pytest.raises(YamuxProtocolError, match="window"):
        pump(client, server)


def test_the_window_overrun_is_caught_at_the_header_before_any_payload() -> None:
    _, server = pair()
    server.receive(frame(fr.WINDOW_UPDATE, fr.SYN, 1, 0))
    with pytest.raises(YamuxProtocolError, match="window"):
        server.receive(fr.encode(fr.DATA, 0, 1, 2**32 - 1))


def test_half_close_each_way() -> None:
    client, server = pair()
    sid = opened(client, server)
    client.send_data(sid, b"request")
    client.close_stream(sid)
    events = pump(client, server)
    assert events == [ev.DataReceived(sid, b"request"), ev.StreamEnded(sid)]
    assert server.is_open(sid)  # its own side is still open
    server.send_data(sid, b"reply")
    server.close_stream(sid)
    assert not server.is_open(sid)  # closed both ways: forgotten
    assert pump(server, client) == [ev.DataReceived(sid, b"reply"), ev.StreamEnded(sid)]
    assert not client.is_open(sid)


def test_fin_on_a_data_frame_applies_after_its_payload() -> None:
    _, server = pair()
    events = server.receive(
        frame(fr.WINDOW_UPDATE, fr.SYN, 1, 0) + frame(fr.DATA, fr.FIN, 1, 3, b"end")
    )
    assert events == [ev.StreamOpened(1), ev.DataReceived(1, b"end"), ev.StreamEnded(1)]


def test_data_after_fin_is_a_protocol_error() -> None:
    _, server = pair()
    server.receive(frame(fr.WINDOW_UPDATE, fr.SYN | fr.FIN, 1, 0))
    with pytest.raises(YamuxProtocolError, match="after FIN"):
        server.receive(frame(fr.DATA, 0, 1, 1, b"x"))


def test_sending_after_close_is_refused() -> None:
    client, server = pair()
    sid = opened(client, server)
    client.close_stream(sid)
    client.close_stream(sid)  # idempotent: one FIN
    assert [h.flags for h in out(client)] == [fr.FIN]
    with pytest.raises(ValueError, match="closed for sending"):
        client.send_data(sid, b"x")
    assert client.send_window(sid) == 0


def test_reset_ends_both_sides_and_later_data_is_dropped() -> None:
    client, server = pair()
    sid = opened(client, server)
    client.send_data(sid, b"in flight")
    wire = client.data_to_send(1 << 20)
    server.reset_stream(sid)
    server.reset_stream(sid)  # idempotent: one RST
    assert [h.flags for h in out(server)] == [fr.RST]
    assert server.receive(wire) == []  # the data in flight to a reset stream is dropped
    assert not server.is_open(sid)
    with pytest.raises(ValueError, match="not open"):
        server.send_data(sid, b"x")


def test_a_peer_reset_is_reported() -> None:
    client, server = pair()
    sid = opened(client, server)
    client.reset_stream(sid)
    assert pump(client, server) == [ev.StreamReset(sid)]
    assert not server.is_open(sid)
    server.consumed(sid, 10)  # a late read of a reset stream grants nothing
    assert out(server) == []


def test_pings_are_answered_and_pongs_reported() -> None:
    client, server = pair()
    client.ping(42)
    assert pump(client, server) == []
    assert out(server) == [fr.Header(0, fr.PING, fr.ACK, 0, 42)]
    client.ping(7)
    pump(client, server)
    assert pump(server, client) == [ev.PongReceived(7)]
    # Answers wait in the control queue until handed out: what a peer that asks and never
    # reads makes us hold (the adapter cuts it off at a bound).
    server.receive(frame(fr.PING, fr.SYN, 0, 1) * 3)
    assert server.control_unsent == 3 * fr.HEADER_SIZE
    server.data_to_send(1 << 20)
    assert server.control_unsent == 0


def test_go_away_stops_new_streams_both_ways() -> None:
    client, server = pair()
    server.go_away()
    server.go_away()  # once
    assert pump(server, client) == [ev.GoAwayReceived(fr.GO_AWAY_NORMAL)]
    with pytest.raises(YamuxProtocolError, match="going away"):
        client.open_stream()
    # A SYN that crossed our GO_AWAY is refused with RST.
    assert server.receive(frame(fr.WINDOW_UPDATE, fr.SYN, 1, 0)) == []
    assert out(server) == [fr.Header(0, fr.WINDOW_UPDATE, fr.RST, 1, 0)]


def test_streams_beyond_the_cap_are_reset_and_their_data_dropped() -> None:
    server = Session(client=False, max_streams=3)
    for sid in (1, 3, 5):
        assert server.receive(frame(fr.WINDOW_UPDATE, fr.SYN, sid, 0)) == [ev.StreamOpened(sid)]
    out(server)
    assert server.receive(frame(fr.DATA, fr.SYN, 7, 4, b"more")) == []
    assert out(server) == [fr.Header(0, fr.WINDOW_UPDATE, fr.RST, 7, 0)]
    assert not server.is_open(7)
    # Our own streams are not counted against the peer's cap.
    assert server.open_stream() == 2
    # Once one of the peer's streams is gone, it may open another.
    server.reset_stream(1)
    assert server.receive(frame(fr.WINDOW_UPDATE, fr.SYN, 9, 0)) == [ev.StreamOpened(9)]


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (fr.HEADER.pack(1, fr.DATA, 0, 1, 0), "version"),
        (frame(9, 0, 1, 0), "unknown frame type"),
        (frame(fr.DATA, 0, 0, 0), "stream 0"),
        (frame(fr.WINDOW_UPDATE, fr.SYN, 2, 0), "an ID of ours"),
        (frame(fr.WINDOW_UPDATE, fr.SYN, 1, 0) * 2, "reopened"),
        (frame(fr.DATA, 0, 99, 2 * 1024 * KIB), "unknown stream"),
        (frame(fr.WINDOW_UPDATE, fr.SYN, 1, 2**32 - 1), "beyond 2\\^32"),
    ],
)
def test_protocol_errors(wire: bytes, message: str) -> None:
    _, server = pair()
    with pytest.raises(YamuxProtocolError, match=message):
        server.receive(wire)


def test_frames_for_unknown_streams_are_ignored() -> None:
    _, server = pair()
    assert server.receive(frame(fr.DATA, 0, 5, 3, b"old") + frame(fr.WINDOW_UPDATE, 0, 5, 9)) == []
    assert server.receive(frame(fr.WINDOW_UPDATE, fr.FIN, 5, 0)) == []


def test_output_is_handed_out_in_batches_of_whole_frames() -> None:
    client, server = pair()
    sid = opened(client, server)
    for _ in range(3):
        client.send_data(sid, b"x" * 100)
    client.close_stream(sid)
    total = client.bytes_to_send
    first = client.data_to_send(250)
    assert len(first) == 2 * 112  # two whole frames fit, the third does not
    rest = client.data_to_send(1 << 20)
    assert len(first) + len(rest) == total == 3 * 112 + 12
    assert client.bytes_to_send == 0 and client.data_to_send(10) == b""
    assert (client.control_out, client.data_out) == client.mark()


def test_control_frames_go_out_before_queued_data_and_fin_after_it() -> None:
    """A window update or pong never waits behind bulk data; a FIN never overtakes it."""
    client, server = pair()
    sid = opened(client, server)
    other = client.open_stream()
    client.send_data(sid, b"d" * 1000)
    client.close_stream(sid)
    client.ping(5)
    headers = out(client)
    assert [(h.type, h.flags) for h in headers] == [
        (fr.WINDOW_UPDATE, fr.SYN),  # the second stream's SYN...
        (fr.PING, fr.SYN),  # ...and the ping, though queued after the data
        (fr.DATA, 0),
        (fr.WINDOW_UPDATE, fr.FIN),  # the FIN right after its stream's data
    ]
    assert headers[0].stream_id == other


def test_a_peer_granting_window_on_syn_or_ack_is_honoured() -> None:
    """A SYN or ACK may carry a window delta (go-yamux and js-libp2p send one)."""
    _, server = pair()
    server.receive(frame(fr.WINDOW_UPDATE, fr.SYN, 1, 768 * KIB))
    sid = 1
    assert server.send_window(sid) == fr.INITIAL_WINDOW + 768 * KIB
    mine = server.open_stream()
    server.receive(frame(fr.WINDOW_UPDATE, fr.ACK, mine, 100))
    assert server.send_window(mine) == fr.INITIAL_WINDOW + 100


def test_a_stream_opened_and_reset_at_once_is_not_opened() -> None:
    """SYN|RST churn must not open (and hand to the application) a stream each time."""
    _, server = pair()
    for sid in range(1, 200, 2):
        assert server.receive(frame(fr.WINDOW_UPDATE, fr.SYN | fr.RST, sid, 0)) == []
    assert server.bytes_to_send == 0  # nothing to answer, either
    assert not server.is_open(1)


def test_a_frame_larger_than_the_batch_is_cut() -> None:
    client, server = pair()
    sid = opened(client, server)
    client.send_data(sid, b"y" * 1000)
    parts = [client.data_to_send(300) for _ in range(4)]
    assert [len(p) for p in parts] == [300, 300, 300, 112]
    assert server.receive(b"".join(parts)) == [ev.DataReceived(sid, b"y" * 1000)]


def test_random_traffic_round_trips() -> None:
    """Random writes, reads, cuts and closes on many streams: every byte arrives in order
    and every stream ends."""
    rng = random.Random(11)
    client, server = pair()
    sent: dict[int, bytearray] = {}
    got: dict[int, bytearray] = {}
    ended: set[int] = set()
    for _ in range(20):
        sent[client.open_stream()] = bytearray()
    pending: dict[int, bytes] = {sid: rng.randbytes(rng.randint(0, 700 * KIB)) for sid in sent}
    for _ in range(10_000):
        for sid, data in list(pending.items()):
            n = client.send_data(sid, data[: rng.randint(1, 100 * KIB)])
            sent[sid] += data[:n]
            pending[sid] = data[n:]
            if not pending[sid]:
                client.close_stream(sid)
                del pending[sid]
        wire = client.data_to_send(1 << 30)
        while wire:
            cut = rng.randint(1, len(wire))
            for event in server.receive(wire[:cut]):
                if isinstance(event, ev.DataReceived):
                    got.setdefault(event.stream_id, bytearray()).extend(event.data)
                    server.consumed(event.stream_id, len(event.data))
                elif isinstance(event, ev.StreamEnded):
                    ended.add(event.stream_id)
            wire = wire[cut:]
        pump(server, client)
        if not pending:
            break
    assert ended == set(sent)
    assert all(bytes(got.get(sid, b"")) == bytes(data) for sid, data in sent.items())
