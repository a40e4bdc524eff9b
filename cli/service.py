"""``p2pchat daemon install-service|uninstall-service``: run p2pchatd as a systemd user unit.

The unit file is plain text from :func:`render_unit` (a pure function); the commands only
decide what goes in it, write or remove ``$XDG_CONFIG_HOME/systemd/user/p2pchatd.service``
and print what to run next. They never call ``systemctl`` themselves: enabling a service
is the user's decision, and tests must not touch a real service manager.

The sandbox: the daemon needs to write only its data directory (and the configured incoming
and recording directories), talk to the network, and read its own code. So the whole file
system is read-only except those (``ProtectSystem=strict``, ``ProtectHome=read-only``,
``ReadWritePaths=``), with a private /tmp and /dev, no privilege gain, no kernel tunables,
modules or cgroups, only the socket families it uses (Unix for the control socket, IPv4/6,
netlink to list interfaces for ICE and mDNS), native syscalls only and umask 077.
``MemoryDenyWriteExecute=`` is left out because it breaks calls: aiortc's DTLS sets a
pyOpenSSL verify callback, a cffi ``ffi.callback()`` that needs writable-and-executable
memory. Under the same kernel rule (``prctl(PR_SET_MDWE)``) ``Context.set_verify`` raises
``MemoryError: Cannot allocate write+execute memory`` (checked on Linux 6.18, cffi as pinned).
``PrivateDevices=yes`` hides /dev/video0: ``--source camera`` needs a drop-in with
``PrivateDevices=no``. In a user manager these options need unprivileged user namespaces.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from p2pchat import paths

from .daemonctl import key_is_encrypted
from .output import err, out

SERVICE = "p2pchatd"
UNIT_NAME = f"{SERVICE}.service"
MARKER = "# Written by `p2pchat daemon install-service`"
"""First line of every unit we write: uninstall-service removes only files that have it."""
DAEMON_MODULE = "daemon.main"

_PLAIN = re.compile(r"[A-Za-z0-9/._+=:@,-]+")


def unit_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where systemd looks for user units: ``$XDG_CONFIG_HOME/systemd/user``."""
    env = os.environ if env is None else env
    config = env.get("XDG_CONFIG_HOME", "")
    base = Path(config) if config and os.path.isabs(config) else Path.home() / ".config"
    return base / "systemd" / "user"


def unit_path(env: Mapping[str, str] | None = None) -> Path:
    return unit_dir(env) / UNIT_NAME


def _check(text: str) -> str:
    if any(c in text for c in "\n\r\x00"):
        raise ValueError(f"{text!r} cannot appear in a unit file (line break or NUL)")
    return text


def quote(word: str, *, command: bool = False) -> str:
    """``word`` as one word of a unit-file list (``ExecStart=`` if ``command``, where ``$``
    expands variables): specifiers (``%``) escaped, quoted if systemd would split it."""
    word = _check(word).replace("%", "%%")
    if command:
        word = word.replace("$", "$$")
    if _PLAIN.fullmatch(word):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def path_value(path: Path) -> str:
    """``path`` as a whole-line value (``WorkingDirectory=``: no quoting, only specifiers)."""
    text = _check(os.fspath(path))
    if text != text.strip():
        raise ValueError(f"{text!r}: a path with leading or trailing spaces cannot be used")
    return text.replace("%", "%%")


def render_unit(
    argv: Sequence[str],
    home: Path,
    *,
    writable: Sequence[Path] = (),
    environment: Mapping[str, str] | None = None,
) -> str:
    """The unit file that runs ``argv`` (p2pchatd, absolute) for data directory ``home``,
    sandboxed so that it can write only ``home`` and ``writable`` (each ignored if missing)."""
    if not argv or not os.path.isabs(argv[0]):
        raise ValueError("the daemon's command must start with an absolute path")
    if not home.is_absolute():
        raise ValueError("the data directory must be an absolute path")
    rw = [quote(os.fspath(home))] + [
        "-" + quote(os.fspath(p)) for p in dict.fromkeys(writable) if p != home
    ]
    env_lines = [
        f"Environment={quote(f'{key}={value}')}" for key, value in (environment or {}).items()
    ]
    lines = [
        MARKER,
        "[Unit]",
        "Description=p2pchat daemon (serverless end-to-end encrypted messenger)",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(quote(word, command=True) for word in argv),
        f"WorkingDirectory={path_value(home)}",
        *env_lines,
        "Restart=on-failure",
        "RestartSec=5",
        "TimeoutStopSec=30",
        "# Sandbox: read-only everywhere but the data directory; see cli/service.py.",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "ReadWritePaths=" + " ".join(rw),
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "UMask=0077",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def daemon_argv(home: Path, passphrase_file: str | None) -> tuple[list[str], dict[str, str]]:
    """The absolute command that runs p2pchatd for ``home`` from this installation, and the
    environment it needs: the ``p2pchatd`` script beside this interpreter if there is one,
    else this interpreter with ``-m daemon.main`` (and the checkout on PYTHONPATH)."""
    python = Path(os.path.abspath(sys.executable))  # not resolved: keep the venv's path
    script = python.parent / "p2pchatd"
    env: dict[str, str] = {}
    if script.is_file() and os.access(script, os.X_OK):
        argv = [os.fspath(script)]
    else:
        argv = [os.fspath(python), "-m", DAEMON_MODULE]
        root = Path(__file__).resolve().parent.parent
        if (root / "daemon").is_dir():
            env["PYTHONPATH"] = os.fspath(root)
    argv += ["--home", os.fspath(home)]
    if passphrase_file:
        argv += ["--passphrase-file", os.path.abspath(passphrase_file)]
    return argv, env


def _writable_dirs(home: Path) -> list[Path]:
    """Directories outside ``home`` the daemon writes to, from its config.json: where
    received files go (``incoming_dir``) and where auto-answered calls are recorded
    (``call_record_dir``). Read here as plain JSON: the CLI does not import the engine."""
    path = home / paths.CONFIG_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError, RecursionError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object")
    dirs: list[Path] = []
    for key in ("incoming_dir", "call_record_dir"):
        value = raw.get(key) or ""
        if not isinstance(value, str) or (value and not os.path.isabs(value)):
            raise ValueError(f"{path}: {key!r} must be an absolute directory path")
        if value and not Path(value).is_relative_to(home):
            dirs.append(Path(value))
    return dirs


def cmd_install_service(
    home: Path, *, force: bool, print_only: bool, passphrase_file: str | None
) -> int:
    if passphrase_file:
        if not os.path.isfile(passphrase_file):
            err(f"error: passphrase file {passphrase_file} does not exist")
            return 1
        if os.stat(passphrase_file).st_mode & 0o077:
            err(f"warning: {passphrase_file} is readable by others: chmod 600 it")
    elif key_is_encrypted(home):
        err(
            "error: the identity key is protected by a passphrase, and a service cannot prompt "
            "for one. Put it in a file only you can read (first line, chmod 600) and give "
            "--passphrase-file FILE: the unit passes it to p2pchatd --passphrase-file. "
            f"(${paths.PASSPHRASE_ENV} works too, but a unit's Environment= is readable by "
            "every local user through systemctl show.)"
        )
        return 1
    if any(home.is_relative_to(t) for t in ("/tmp", "/var/tmp")):
        err(f"warning: {home} is in a temporary directory: PrivateTmp=yes hides it from the unit")
    argv, env = daemon_argv(home, passphrase_file)
    try:
        writable = _writable_dirs(home)
        text = render_unit(argv, home, writable=writable, environment=env)
    except ValueError as exc:
        err(f"error: {exc}")
        return 1
    if print_only:
        out(text.rstrip("\n"))
        return 0
    target = unit_path()
    if target.exists() and not force:
        err(f"error: {target} exists; give --force to replace it")
        return 1
    paths.ensure_home(home)  # ReadWritePaths= must exist, or the unit cannot start
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, target)
    out(f"wrote {target} (p2pchatd for {home})")
    for d in writable:
        if not d.is_dir():
            out(f"note: {d} does not exist yet; create it, or the daemon cannot write there")
    out("start it now and at every login with:")
    out(f"  systemctl --user daemon-reload && systemctl --user enable --now {SERVICE}")
    out(f"  (stop the daemon first if it runs: p2pchat --home {home} daemon stop)")
    out("to keep it running while you are logged out: loginctl enable-linger")
    out(f"its output: journalctl --user -u {SERVICE} (and {home / paths.LOG_FILE})")
    return 0


def cmd_uninstall_service(*, force: bool) -> int:
    target = unit_path()
    if not target.exists():
        out(f"no {target}: nothing to remove")
        return 0
    try:
        first = target.read_text().split("\n", 1)[0]
    except OSError as exc:
        err(f"error: cannot read {target}: {exc}")
        return 1
    if first != MARKER and not force:
        err(f"error: {target} was not written by p2pchat; give --force to remove it anyway")
        return 1
    wanted = target.parent / "default.target.wants" / UNIT_NAME
    if wanted.is_symlink() and not force:
        err(
            f"error: the service is still enabled: first run "
            f"systemctl --user disable --now {SERVICE}"
        )
        return 1
    target.unlink()
    out(f"removed {target}")
    out("then run: systemctl --user daemon-reload")
    return 0
