"""The control API's shared vocabulary (error codes) and a small blocking client.

Kept free of libp2p and trio imports so the CLI starts fast; see docs/API.md for the protocol.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Self

SOCKET_NAME: Final = "control.sock"
MAX_LINE_BYTES: Final = 1024 * 1024

# JSON-RPC 2.0 standard codes
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603

ERROR_CODES: Final[dict[str, int]] = {
    "parse_error": PARSE_ERROR,
    "invalid_request": INVALID_REQUEST,
    "method_not_found": METHOD_NOT_FOUND,
    "invalid_params": INVALID_PARAMS,
    "internal_error": INTERNAL_ERROR,
    "invalid_id": 1001,
    "not_found": 1002,
    "ambiguous": 1003,
    "not_friend": 1004,
    "self": 1005,
    "blocked": 1006,
    "too_long": 1007,
    "disk_full": 1008,
    "no_request": 1009,
    "storage_error": 1010,
    "unreachable": 1011,
    "file_error": 1012,
    "invalid_state": 1013,
    "too_large": 1014,
    "busy": 1015,
    "media_error": 1016,
    "unauthorized": 1017,
    "not_allowed": 1018,
    "not_member": 1019,
}


class ApiError(Exception):
    """An error the daemon returned, or one met while talking to it."""

    def __init__(self, name: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.code = ERROR_CODES.get(name, INTERNAL_ERROR)
        self.message = message
        self.data = data or {}

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "data": {"name": self.name, **self.data},
        }


class DaemonNotRunning(ApiError):
    """Nothing listens on the control socket."""


def socket_path(home: Path) -> Path:
    return home / SOCKET_NAME


class Client:
    """A blocking JSON-RPC client over the daemon's Unix socket."""

    def __init__(self, home: Path, timeout: float | None = 30.0) -> None:
        self.home = home
        path = socket_path(home)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError):
            self._sock.close()
            raise DaemonNotRunning(
                "daemon_not_running",
                f"the p2pchat daemon is not running for {home} "
                f"(start it with: p2pchat --home {home} daemon start)",
            ) from None
        except OSError as exc:
            self._sock.close()
            raise DaemonNotRunning(
                "daemon_not_running", f"cannot reach the daemon at {path}: {exc}"
            ) from None
        self._reader = self._sock.makefile("rb")
        self._next_id = 1

    def close(self) -> None:
        # shutdown() first: it wakes a thread blocked reading this socket, so close() cannot
        # hang on the reader's lock.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(OSError, ValueError):
            self._reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, obj: dict[str, Any]) -> None:
        self._sock.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def _read(self) -> dict[str, Any]:
        line = self._reader.readline(MAX_LINE_BYTES + 1)
        if not line:
            raise ApiError("internal_error", "the daemon closed the connection")
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ApiError("internal_error", "the daemon sent something that is not an object")
        return obj

    def call(self, method: str, **params: Any) -> Any:
        """Call ``method`` and return its result, raising :class:`ApiError` on error.

        Events that arrive before the response (after ``events.subscribe``) are dropped here;
        use :meth:`events` to read them.
        """
        request_id = self._next_id
        self._next_id += 1
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        while True:
            obj = self._read()
            if obj.get("id") != request_id:
                continue
            if "error" in obj:
                err = obj["error"]
                data = dict(err.get("data") or {})
                name = str(data.pop("name", "internal_error"))
                raise ApiError(name, str(err.get("message", "error")), data)
            return obj.get("result")

    def events(self) -> Iterator[dict[str, Any]]:
        """Subscribe now, then return an iterator over event objects (each notification's
        ``params``). The subscription is live when this returns; the iteration ends when the
        connection closes (the daemon stopped, or :meth:`close` was called)."""
        self.call("events.subscribe")
        self._sock.settimeout(None)
        return self._event_stream()

    def _event_stream(self) -> Iterator[dict[str, Any]]:
        while True:
            try:
                obj = self._read()
            except (ApiError, OSError, ValueError):
                return
            if obj.get("method") == "event" and isinstance(obj.get("params"), dict):
                yield obj["params"]
