"""Turning a peer's offered file name into a safe name inside the incoming directory.

Pure functions. The wire layer already refuses names with separators, ``.``/``..`` or control
characters (:func:`p2pchat.wire.file_name_problem`); this makes what passes harmless on every
platform a user may later copy the file to: no leading dots (hidden files, our partial files),
no Windows device names or reserved characters, no trailing dots or spaces, bounded length.
"""

from __future__ import annotations

import re
from typing import Final

MAX_NAME_BYTES: Final = 200
"""Room under the usual 255-byte limit for a ``" (12)"`` suffix and the partial extension."""

PARTIAL_SUFFIX: Final = ".p2pchat-part"

_RESERVED: Final = re.compile(r'[\x00-\x1f\x7f-\x9f/\\:*?"<>|]')
_DEVICE_NAMES: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"COM{i}" for i in range(10)}
    | {f"LPT{i}" for i in range(10)}
)


def sanitize(name: str) -> str:
    """A file name safe to create in the incoming directory, as close to ``name`` as can be."""
    clean = _RESERVED.sub("_", name).strip(" ")
    clean = clean.lstrip(". ").rstrip(". ")  # no hidden name, none starting with a space
    if not clean:
        return "file"
    if clean.split(".", 1)[0].rstrip(" ").upper() in _DEVICE_NAMES:
        clean = "_" + clean
    if clean.endswith(PARTIAL_SUFFIX):
        clean = clean + "_"
    return _clip(clean, MAX_NAME_BYTES)


def _clip(name: str, limit: int) -> str:
    """Shorten ``name`` to ``limit`` UTF-8 bytes, keeping a short extension."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode()) > 16:
        stem, ext, dot = name, "", ""
    room = limit - len((dot + ext).encode())
    clipped = stem.encode()[:room].decode(errors="ignore").rstrip(". ") or "file"
    return clipped + dot + ext


def numbered(name: str, n: int) -> str:
    """``name`` with a ``" (n)"`` suffix before its extension, for n >= 1."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return f"{name} ({n})"
    return f"{stem} ({n}).{ext}"


def partial_name(name: str, tid_hex: str) -> str:
    """The partial file beside the final one: hidden, tagged with the transfer, and never a
    name :func:`sanitize` can produce, so a peer cannot aim a file at it."""
    return f".{name}.{tid_hex[:12]}{PARTIAL_SUFFIX}"
