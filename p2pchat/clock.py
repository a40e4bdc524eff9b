"""Wall-clock timestamps as stored in the database and sent in frames (milliseconds)."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
