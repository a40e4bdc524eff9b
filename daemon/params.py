"""What every control-API handler shares: its signature and the checks of its parameters.

A handler is ``async def handler(session, params) -> result``: ``params`` is the request's
``params`` object (always a dict here), the result is any JSON value, and an
:class:`~p2pchat.api.ApiError` it raises becomes the JSON-RPC error reply (docs/API.md). The
``*_param`` helpers turn a missing or mistyped parameter into ``invalid_params``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from p2pchat.api import ApiError

if TYPE_CHECKING:
    from daemon.control import Session

Params = dict[str, Any]
Handler = Callable[["Session", Params], Awaitable[Any]]


def str_param(params: Params, key: str, *, required: bool = True, default: str = "") -> str:
    """``params[key]`` as a string; ``default`` when absent or null and not ``required``."""
    if key not in params or params[key] is None:
        if required:
            raise ApiError("invalid_params", f"missing parameter {key!r}")
        return default
    value = params[key]
    if not isinstance(value, str):
        raise ApiError("invalid_params", f"parameter {key!r} must be a string")
    return value


def int_param(params: Params, key: str, default: int | None, lo: int, hi: int) -> int | None:
    """``params[key]`` as an integer in ``[lo, hi]`` (booleans refused); ``default`` when
    absent; None when null (or absent with no default)."""
    value = params.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ApiError("invalid_params", f"parameter {key!r} must be an integer in [{lo}, {hi}]")
    return value


def bool_param(params: Params, key: str, default: bool) -> bool:
    """``params[key]`` as true or false; ``default`` when absent."""
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise ApiError("invalid_params", f"parameter {key!r} must be true or false")
    return value
