"""``p2pchat daemon install-service|uninstall-service``: the systemd user unit's text, and the
commands that write and remove it (run as real CLI subprocesses, with XDG_CONFIG_HOME in a
temporary directory; systemctl is never called)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli.service import MARKER, UNIT_NAME, daemon_argv, quote, render_unit
from tests.harness import REPO

pytestmark = pytest.mark.timeout(60)

SANDBOX = [
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=read-only",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "UMask=0077",
    "Restart=on-failure",
]


def directives(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            assert key not in out, f"{key} twice"
            out[key] = value
    return out


def test_the_unit_runs_the_daemon_for_its_home_in_a_sandbox(tmp_path: Path) -> None:
    home = tmp_path / "home"
    text = render_unit(["/opt/venv/bin/p2pchatd", "--home", str(home)], home)
    assert text.startswith(MARKER + "\n[Unit]\n")
    lines = text.splitlines()
    for line in SANDBOX:
        assert line in lines
    d = directives(text)
    assert d["ExecStart"] == f"/opt/venv/bin/p2pchatd --home {home}"
    assert d["ReadWritePaths"] == str(home)  # the only writable place
    assert d["WorkingDirectory"] == str(home)
    assert d["WantedBy"] == "default.target"
    assert "MemoryDenyWriteExecute" not in d  # breaks aiortc's DTLS (see cli/service.py)
    assert "Environment" not in d


def test_extra_writable_dirs_and_environment() -> None:
    home = Path("/srv/p2p")
    text = render_unit(
        ["/usr/bin/python3", "-m", "daemon.main", "--home", str(home)],
        home,
        writable=[Path("/data/incoming"), home, Path("/data/calls")],
        environment={"PYTHONPATH": "/src/p2pchat"},
    )
    d = directives(text)
    assert d["ReadWritePaths"] == "/srv/p2p -/data/incoming -/data/calls"
    assert d["Environment"] == "PYTHONPATH=/src/p2pchat"


def test_words_are_quoted_and_escaped_for_systemd() -> None:
    assert quote("/plain/path") == "/plain/path"
    assert quote("/a b") == '"/a b"'
    assert quote("100%") == '"100%%"'  # a specifier otherwise
    assert quote("$HOME", command=True) == '"$$HOME"'  # expanded in ExecStart otherwise
    assert quote("$HOME") == '"$HOME"'
    assert quote('say "hi" \\o/') == '"say \\"hi\\" \\\\o/"'
    for bad in ("/a\nExecStartPre=/bin/evil", "/a\rb", "/a\x00b"):
        with pytest.raises(ValueError):
            quote(bad)
    with pytest.raises(ValueError):
        render_unit(["/bin/p2pchatd"], Path("/home/x\nUser=root"))
    with pytest.raises(ValueError):
        render_unit(["p2pchatd"], Path("/home/x"))  # not absolute
    with pytest.raises(ValueError):
        render_unit(["/bin/p2pchatd"], Path("relative"))


def test_the_command_is_this_installation_absolute(tmp_path: Path) -> None:
    argv, env = daemon_argv(tmp_path, None)
    assert os.path.isabs(argv[0]) and argv[-2:] == ["--home", str(tmp_path)]
    assert Path(argv[0]).parent == Path(os.path.abspath(sys.executable)).parent
    if Path(argv[0]).name != "p2pchatd":  # not pip-installed: the module, from this checkout
        assert argv[1:3] == ["-m", "daemon.main"] and env == {"PYTHONPATH": str(REPO)}
    argv, _ = daemon_argv(tmp_path, "pass.txt")
    assert argv[-2:] == ["--passphrase-file", os.path.abspath("pass.txt")]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("name", ["home", 'my home %h $USER "q"'])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path, name: str) -> None:
    home = tmp_path / name
    home.mkdir()
    argv, env = daemon_argv(home, None)
    unit = tmp_path / UNIT_NAME
    unit.write_text(render_unit(argv, home, writable=[tmp_path / "in"], environment=env))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"),
    )
    # It exits 0 on settings it ignores, so any complaint at all fails the test.
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "")


# --- the commands --------------------------------------------------------------------------


def run(tmp_path: Path, home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("P2PCHAT_PASSPHRASE", "P2PCHAT_HOME")}
    env.update(PYTHONPATH=str(REPO), XDG_CONFIG_HOME=str(tmp_path / "config"))
    return subprocess.run(
        [sys.executable, "-m", "cli", "--home", str(home), "daemon", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=REPO,
    )


def test_install_writes_the_unit_and_says_what_next(tmp_path: Path) -> None:
    home = tmp_path / "home"
    unit = tmp_path / "config" / "systemd" / "user" / UNIT_NAME
    printed = run(tmp_path, home, "install-service", "--print")
    assert printed.returncode == 0 and not unit.exists() and not home.exists()
    done = run(tmp_path, home, "install-service")
    assert done.returncode == 0, done.stderr
    text = unit.read_text()
    assert text == printed.stdout
    assert directives(text)["ExecStart"].endswith(f"--home {home}")
    assert "systemctl --user daemon-reload && systemctl --user enable --now p2pchatd" in (
        done.stdout
    )
    assert home.is_dir() and (home.stat().st_mode & 0o777) == 0o700  # ReadWritePaths= exists
    # Not replaced without --force; replaced with it (another home, say).
    other = tmp_path / "other"
    again = run(tmp_path, other, "install-service")
    assert again.returncode == 1 and "--force" in again.stderr and unit.read_text() == text
    assert run(tmp_path, other, "install-service", "--force").returncode == 0
    assert f"--home {other}" in unit.read_text()


def test_configured_dirs_outside_home_become_writable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text(
        json.dumps({"incoming_dir": str(tmp_path / "in"), "call_record_dir": str(tmp_path / "r")})
    )
    done = run(tmp_path, home, "install-service", "--print")
    assert done.returncode == 0, done.stderr
    rw = directives(done.stdout)["ReadWritePaths"]
    assert rw == f"{home} -{tmp_path / 'in'} -{tmp_path / 'r'}"
    (home / "config.json").write_text("{not json")
    bad = run(tmp_path, home, "install-service")
    assert bad.returncode == 1 and "config.json" in bad.stderr


def test_an_encrypted_key_needs_a_passphrase_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secret = tmp_path / "pass"
    secret.write_text("correct horse\n")
    secret.chmod(0o600)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run(
        [sys.executable, "-m", "cli", "--home", str(home), "init", "--passphrase-file", secret],
        check=True,
        capture_output=True,
        timeout=30,
        env=env,
        cwd=REPO,
    )
    unit = tmp_path / "config" / "systemd" / "user" / UNIT_NAME
    refused = run(tmp_path, home, "install-service")
    assert refused.returncode == 1 and not unit.exists()
    assert "cannot prompt" in refused.stderr and "--passphrase-file" in refused.stderr
    done = run(tmp_path, home, "install-service", "--passphrase-file", str(secret))
    assert done.returncode == 0, done.stderr
    assert directives(unit.read_text())["ExecStart"].endswith(f"--passphrase-file {secret}")
    missing = run(tmp_path, home, "install-service", "--force", "--passphrase-file", "/nope")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_uninstall_removes_only_our_unit_and_not_while_enabled(tmp_path: Path) -> None:
    home = tmp_path / "home"
    unit = tmp_path / "config" / "systemd" / "user" / UNIT_NAME
    assert run(tmp_path, home, "uninstall-service").returncode == 0  # nothing there: fine
    assert run(tmp_path, home, "install-service").returncode == 0
    wants = unit.parent / "default.target.wants"
    wants.mkdir()
    (wants / UNIT_NAME).symlink_to(unit)  # what `systemctl --user enable` leaves
    enabled = run(tmp_path, home, "uninstall-service")
    assert enabled.returncode == 1 and "disable --now p2pchatd" in enabled.stderr
    assert unit.exists()
    (wants / UNIT_NAME).unlink()
    done = run(tmp_path, home, "uninstall-service")
    assert done.returncode == 0 and not unit.exists() and "daemon-reload" in done.stdout
    unit.write_text("[Service]\nExecStart=/bin/something-else\n")  # someone else's
    foreign = run(tmp_path, home, "uninstall-service")
    assert foreign.returncode == 1 and unit.exists()
    assert run(tmp_path, home, "uninstall-service", "--force").returncode == 0
    assert not unit.exists()
