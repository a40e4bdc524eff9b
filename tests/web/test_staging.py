"""The web app's files: the token file, staged uploads, and the config keys."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
import trio.testing

from daemon.web import guard, token
from daemon.web import uploads as uploads_module
from daemon.web.off import WebOff
from daemon.web.uploads import WRITE_BATCH, Uploads
from p2pchat.api import ApiError
from p2pchat.config import ConfigError, load_config, save_config

MIB = 1 << 20

# --- the token file ----------------------------------------------------------------------


async def test_the_token_is_created_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "web-token"
    first = await token.load(path)
    assert guard.is_token(first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert await token.load(path) == first
    second = await token.rotate(path)
    assert second != first and await token.load(path) == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*tmp"))


async def test_a_damaged_or_exposed_token_file_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "web-token"
    path.write_text("not a token\n")
    replaced = await token.load(path)
    assert guard.is_token(replaced) and path.read_text().strip() == replaced
    os.chmod(path, 0o644)
    assert await token.load(path) == replaced
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_token_file_that_is_not_utf8_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "web-token"
    path.write_bytes(b"\xff\xfe" + b"A" * 41 + b"\n")
    replaced = await token.load(path)
    assert guard.is_token(replaced) and path.read_text().strip() == replaced


async def test_concurrent_rotations_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "web-token"
    await token.load(path)
    made: list[str] = []

    async def rotate() -> None:
        made.append(await token.rotate(path))

    async with trio.open_nursery() as nursery:
        for _ in range(40):
            nursery.start_soon(rotate)
    assert len(made) == 40 and path.read_text().strip() in made
    assert not list(tmp_path.glob(".*tmp"))
    off = WebOff(tmp_path)
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(off.new_token, None)
    assert guard.is_token(path.read_text().strip()) and not list(tmp_path.glob(".*tmp"))


async def test_the_token_file_is_never_read_through_a_symlink(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere"
    secret.write_text("A" * 43)
    (tmp_path / "web-token").symlink_to(secret)
    with pytest.raises(OSError):
        await token.load(tmp_path / "web-token")


# --- staged uploads --------------------------------------------------------------------------


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await trio.sleep(0)
        yield part


async def test_an_upload_is_staged_in_its_own_private_directory(tmp_path: Path) -> None:
    uploads = Uploads(tmp_path / "web-uploads")
    data = [os.urandom(700_000) for _ in range(3)]  # crosses the 1 MiB write batch
    path = await uploads.stage(chunks(*data), "a.bin", 10**9)
    assert path.read_bytes() == b"".join(data)
    assert path.parent.parent == uploads.root and len(path.parent.name) == 32
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    other = await uploads.stage(chunks(b"x"), "a.bin", 10)  # same name: no collision
    assert other != path and path.read_bytes() == b"".join(data)
    # Busy until released: a sweep keeps it even with no transfer reading it.
    await uploads.sweep([])
    assert path.exists() and other.exists()
    uploads.release(path)
    uploads.release(other)
    open_one = {"direction": "out", "state": "active", "path": str(path)}
    await uploads.sweep([open_one, {"direction": "out", "state": "completed", "path": str(other)}])
    assert path.exists() and not other.parent.exists()
    await uploads.sweep([])
    assert not path.parent.exists()


async def test_a_failed_upload_leaves_nothing(tmp_path: Path) -> None:
    uploads = Uploads(tmp_path / "web-uploads")
    with pytest.raises(ApiError) as info:
        await uploads.stage(chunks(b"12345", b"6"), "big", 5)
    assert info.value.name == "too_large"

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("the client went away")

    with pytest.raises(RuntimeError):
        await uploads.stage(broken(), "gone", 100)
    with trio.move_on_after(0.05):
        await uploads.stage(_forever(), "cancelled", 100)
    assert list(uploads.root.iterdir()) == []
    assert not uploads._busy


async def _forever() -> AsyncIterator[bytes]:
    yield b"a"
    await trio.sleep_forever()
    yield b"never"


async def test_the_watcher_deletes_a_staged_copy_when_its_transfer_ends(tmp_path: Path) -> None:
    uploads = Uploads(tmp_path / "web-uploads")
    path = await uploads.stage(chunks(b"x"), "x", 10)
    uploads.release(path)
    outside = tmp_path / "mine.txt"
    outside.write_text("keep")
    send, receive = trio.open_memory_channel[dict[str, object]](10)

    def updated(state: str, p: Path, direction: str = "out") -> dict[str, object]:
        t = {"id": "t", "direction": direction, "state": state, "path": str(p)}
        return {"type": "transfer.updated", "transfer": t}

    async with trio.open_nursery() as nursery:
        nursery.start_soon(uploads.watch, receive)
        await send.send(updated("active", path))
        await send.send(updated("completed", outside))  # not ours: never touched
        await send.send(updated("completed", path, "in"))  # an incoming one: not ours
        await send.send({"type": "transfer.progress", "id": "t"})
        await trio.testing.wait_all_tasks_blocked()
        assert path.exists()
        await send.send(updated("cancelled", path))
        with trio.fail_after(5):
            while path.parent.exists():
                await trio.sleep(0.01)
        await send.aclose()  # the watcher returns when the bus drops it
    assert outside.read_text() == "keep"


async def test_not_enough_space_is_refused_before_reading(tmp_path: Path) -> None:
    uploads = Uploads(tmp_path / "web-uploads")
    await uploads.check_space(1)
    with pytest.raises(ApiError) as info:
        await uploads.check_space(2**60)
    assert info.value.name == "disk_full"


async def test_uploads_in_progress_count_against_the_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two uploads that each fit, but not both: the second is refused at once, because the
    first's announced size is reserved until it is written."""
    free = 100 * MIB
    monkeypatch.setattr(uploads_module, "free_bytes", lambda _path: free)
    uploads = Uploads(tmp_path / "web-uploads")
    gate = trio.Event()

    async def slow() -> AsyncIterator[bytes]:
        await gate.wait()
        yield b"x"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(uploads.stage, slow(), "first", 10**9, 60 * MIB)
        with trio.fail_after(5):
            while not uploads.reserved():
                await trio.sleep(0.01)
        assert uploads.reserved() == 60 * MIB
        with pytest.raises(ApiError) as info:
            await uploads.stage(chunks(b"y"), "second", 10**9, 60 * MIB)
        assert info.value.name == "disk_full"
        await uploads.stage(chunks(b"z"), "small", 10**9, 1 * MIB)  # this one fits
        gate.set()
    assert uploads.reserved() == 0
    assert len(list(uploads.root.iterdir())) == 2  # the refused one left nothing


async def test_the_disk_filling_up_during_an_upload_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Free space is checked again at every write batch: something else filling the disk
    meanwhile makes the upload fail with disk_full, and its partial file is deleted."""
    free = [200 * MIB]

    def free_bytes(_path: object) -> int:
        return free[0]

    monkeypatch.setattr(uploads_module, "free_bytes", free_bytes)
    uploads = Uploads(tmp_path / "web-uploads")

    async def filling() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"x" * (WRITE_BATCH // 2)
            free[0] -= 40 * MIB  # another program writes to the disk
            await trio.sleep(0)

    with pytest.raises(ApiError) as info:
        await uploads.stage(filling(), "big", 10**9, 4 * WRITE_BATCH)
    assert info.value.name == "disk_full"
    assert list(uploads.root.iterdir()) == [] and uploads.reserved() == 0


async def test_the_upload_watcher_survives_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error in a sweep (say, the disk) is logged and retried; it never reaches the
    daemon's nursery."""
    from daemon.web import server as server_module

    monkeypatch.setattr(server_module, "WATCH_RETRY", 0.01)
    subscribed: list[trio.MemoryReceiveChannel[dict[str, object]]] = []

    def subscribe() -> trio.MemoryReceiveChannel[dict[str, object]]:
        send, receive = trio.open_memory_channel[dict[str, object]](1)
        send.close()  # the watcher sweeps, watches a closed channel, and starts again
        subscribed.append(receive)
        return receive

    control = SimpleNamespace(node=SimpleNamespace(events=SimpleNamespace(subscribe=subscribe)))
    web = server_module.WebServer(control, tmp_path, load_config(tmp_path))  # type: ignore[arg-type]
    sweeps: list[int] = []

    async def invoke(self: object, method: str, params: object) -> dict[str, object]:
        return {"transfers": []}

    async def sweep(transfers: object) -> None:
        sweeps.append(1)
        if len(sweeps) < 3:
            raise OSError("disk trouble")

    monkeypatch.setattr(server_module.Session, "invoke", invoke)
    monkeypatch.setattr(web.uploads, "sweep", sweep)
    with trio.move_on_after(5) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(web._watch_uploads)
            while len(sweeps) < 5:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert not scope.cancelled_caught and len(subscribed) >= 5


# --- config ------------------------------------------------------------------------------


def test_web_config_defaults_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config(tmp_path)
    assert cfg.web is True and cfg.web_listen == "127.0.0.1:0"
    cfg.web_listen = "127.0.0.1:43210"
    cfg.web = False
    save_config(tmp_path, cfg)
    again = load_config(tmp_path)
    assert again.web is False and again.web_listen == "127.0.0.1:43210"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"web": "yes"}, "'web' must be true or false"),
        ({"web_listen": "example.com:80"}, "'web_listen' must be HOST:PORT"),
        ({"web_listen": "127.0.0.1:70000"}, "'web_listen' must be HOST:PORT"),
        ({"web_listen": 8080}, "'web_listen' must be HOST:PORT"),
    ],
)
def test_bad_web_config_is_refused(tmp_path: Path, fields: dict[str, object], message: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(fields))
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path)
