"""The ``settings`` table: small named values a service keeps across restarts (for example
discovery's saved DHT peers and record sequence number)."""

from __future__ import annotations

import sqlite3

from p2pchat.storage.database import Database


class Settings:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> str | None:
        def fn(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            return str(row[0]) if row else None

        return await self._db.run(fn)

    async def set(self, key: str, value: str) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

        await self._db.run(fn)
