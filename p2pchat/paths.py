"""Where a daemon keeps its data: one directory per identity (Syncthing's model).

``--home DIR`` wins, then ``P2PCHAT_HOME``, then the platform's user data directory. The
directory is private (0700); every file the daemon owns lives in it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

HOME_ENV: Final = "P2PCHAT_HOME"
PASSPHRASE_ENV: Final = "P2PCHAT_PASSPHRASE"

KEY_FILE: Final = "identity.key"
CONFIG_FILE: Final = "config.json"
DB_FILE: Final = "p2pchat.db"
LOG_FILE: Final = "p2pchatd.log"
PID_FILE: Final = "p2pchatd.pid"
WEB_TOKEN_FILE: Final = "web-token"
"""The web app's secret (0600): whoever has it can use the daemon from a browser."""
WEB_UPLOADS_DIR: Final = "web-uploads"
"""Files uploaded from the web app, kept until their transfer ends."""


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser().absolute()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_data_dir("p2pchat", appauthor=False))


def ensure_home(home: Path) -> Path:
    """Create the data directory if needed and make sure it is private to the user."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    return home


def read_passphrase(passphrase_file: str | None) -> bytes | None:
    """The key passphrase from a file (first line) or ``P2PCHAT_PASSPHRASE``, if any."""
    if passphrase_file:
        with open(passphrase_file, "rb") as f:
            line = f.readline().rstrip(b"\r\n")
        return line or None
    env = os.environ.get(PASSPHRASE_ENV)
    return env.encode() if env else None


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (a crash leaves the old file or the new one),
    created 0600 and never through a planted file or symlink (``O_EXCL|O_NOFOLLOW`` on a
    fresh random name, so concurrent writers cannot collide), and durable (file and
    directory fsynced). Blocking: call it through ``trio.to_thread``."""
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
