"""Shared fixtures: real daemon processes in short private temporary directories."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from p2pchat.storage.database import Database
from p2pchat.storage.schema import open_database
from tests.harness import Daemon


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path (Unix socket paths are limited to ~104 bytes).

    Set ``P2PCHAT_KEEP_TMP=1`` to keep it (and the daemons' logs in it) for debugging."""
    path = Path(tempfile.mkdtemp(prefix="p2pc-", dir="/tmp"))
    try:
        yield path
    finally:
        if os.environ.get("P2PCHAT_KEEP_TMP") == "1":
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_daemon(short_tmp: Path) -> Iterator[Callable[..., Daemon]]:
    """Factory for started daemons; every one is stopped (or killed) at teardown."""
    made: list[Daemon] = []

    def make(name: str, start: bool = True, **kwargs: object) -> Daemon:
        d = Daemon(short_tmp / name, name=name, **kwargs)  # type: ignore[arg-type]
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in made:
        d.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "p2pchat.db"


DB_TEST_KEY = bytes(range(32))
"""The key of the encrypted store in tests (any 32 bytes: SQLCipher takes it raw)."""


@pytest.fixture(params=["plain", "encrypted"])
def db_key(request: pytest.FixtureRequest) -> bytes | None:
    """Every test on the database runs on both stores: plain SQLite and SQLCipher."""
    return DB_TEST_KEY if request.param == "encrypted" else None


@pytest.fixture
async def db(db_path: Path, db_key: bytes | None) -> AsyncIterator[Database]:
    """The identity's database on a real file, at the current schema."""
    async with open_database(db_path, key=db_key) as database:
        yield database
