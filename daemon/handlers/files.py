"""File transfers: ``files.*``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from daemon.params import Handler, Params, str_param
from p2pchat.api import ApiError
from p2pchat.files.manager import TransferManager

if TYPE_CHECKING:
    from daemon.control import Session


def _files(s: Session) -> TransferManager:
    files = s.server.node.files
    if files is None:
        raise ApiError("internal_error", "the node is not running")
    return files


async def send(s: Session, p: Params) -> Any:
    return {"transfer": await _files(s).send_file(str_param(p, "friend"), str_param(p, "path"))}


async def list_transfers(s: Session, p: Params) -> Any:
    return {"transfers": _files(s).list_json()}


async def accept(s: Session, p: Params) -> Any:
    return {"transfer": await _files(s).accept(str_param(p, "id"))}


async def decline(s: Session, p: Params) -> Any:
    return {"transfer": await _files(s).decline(str_param(p, "id"))}


async def cancel(s: Session, p: Params) -> Any:
    return {"transfer": await _files(s).cancel(str_param(p, "id"))}


METHODS: Final[dict[str, Handler]] = {
    "files.send": send,
    "files.list": list_transfers,
    "files.accept": accept,
    "files.decline": decline,
    "files.cancel": cancel,
}
