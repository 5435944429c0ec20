# SPDX-License-Identifier: AGPL-3.0-or-later
"""The deployment files: deploy/torrc is valid for the tor on PATH and loads client keys, and the
systemd units and the torrc agree on ports and keep their sandbox.

The tor tests skip where tor is not installed, but fail when ``WHISTLE_REQUIRE_TOR=1`` (CI sets
it and installs Debian's tor), so a tor that rejects an option is never silently skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support import stop_process

from whistle.server.onion import ClientAuthKey

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
TORRC = DEPLOY / "torrc"
UNITS = DEPLOY / "systemd"


def _tor() -> str:
    tor = shutil.which("tor")
    if tor is None:
        if os.environ.get("WHISTLE_REQUIRE_TOR") == "1":
            pytest.fail("WHISTLE_REQUIRE_TOR=1 but tor is not on PATH")
        pytest.skip("tor is not installed")
    return tor


def _torrc_in(root: Path, extra: str = "") -> Path:
    """deploy/torrc with every /var/lib/tor path moved under ``root`` (folders mode 0700, as tor
    demands), so tor can check it without root or an existing /var/lib/tor."""
    root.mkdir(mode=0o700, exist_ok=True)
    text, count = re.subn(r"^(HiddenServiceDir|DataDirectory)\s+/var/lib/tor(/\S*)?$",
                          lambda m: f"{m.group(1)} {root}{m.group(2) or '/data'}",
                          TORRC.read_text(), flags=re.M)
    assert count == 3, "expected DataDirectory and two HiddenServiceDir lines"
    copy = root / "torrc"
    copy.write_text(text + extra)
    return copy


def test_deploy_torrc_verify_config(tmp_path: Path) -> None:
    tor = _tor()
    result = subprocess.run([tor, "--verify-config", "-f", str(_torrc_in(tmp_path / "tor"))],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration was valid" in result.stdout


def test_deploy_torrc_tor_loads_generated_client_key(tmp_path: Path) -> None:
    """A key from whistle.server.onion in authorized_clients/ is loaded by tor itself (offline)."""
    tor = _tor()
    root = tmp_path / "tor"
    auth = root / "whistle-investigator" / "authorized_clients"
    auth.mkdir(mode=0o700, parents=True)
    (root / "whistle-investigator").chmod(0o700)
    (auth / "alice.auth").write_text(ClientAuthKey.generate().server_line() + "\n")
    log = root / "tor.log"
    torrc = _torrc_in(root, f"\nLog info file {log}\nDisableNetwork 1\n")
    proc = subprocess.Popen([tor, "-f", str(torrc)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text() if log.exists() else ""
            if "Loaded a client authorization key file alice.auth" in text:
                break
            time.sleep(0.2)
        else:
            pytest.fail("tor did not load the client key:\n" + (log.read_text() if log.exists() else ""))
        assert "Client authorization" not in text, text  # tor's warnings about a bad key
        assert re.fullmatch(r"[a-z2-7]{56}\.onion\n",
                            (root / "whistle-investigator" / "hostname").read_text())
    finally:
        stop_process(proc, timeout=20)


def _blocks() -> list[str]:
    """The torrc's global part, then one block per HiddenServiceDir (comments dropped)."""
    lines = [ln.strip() for ln in TORRC.read_text().splitlines()]
    text = "\n".join(ln for ln in lines if ln and not ln.startswith("#"))
    return re.split(r"\n(?=HiddenServiceDir )", text)


def test_deploy_torrc_keeps_defences_on() -> None:
    head, source, investigator = _blocks()
    for line in ("SocksPort 0", "ORPort 0", "Log notice syslog", "SafeLogging 1",
                 "HiddenServiceNonAnonymousMode 0"):
        assert line in head.splitlines()
    for line in ("HiddenServiceDir /var/lib/tor/whistle-source/", "HiddenServicePort 80 127.0.0.1:8080",
                 "HiddenServicePoWDefensesEnabled 1", "HiddenServiceEnableIntroDoSDefense 1",
                 "HiddenServiceMaxStreamsCloseCircuit 1"):
        assert line in source.splitlines()
    assert re.search(r"^HiddenServicePoWQueueRate [1-9]", source, re.M)
    assert re.search(r"^HiddenServiceMaxStreams [1-9]", source, re.M)
    assert "HiddenServiceDir /var/lib/tor/whistle-investigator/" in investigator.splitlines()
    assert "HiddenServicePort 80 127.0.0.1:8081" in investigator.splitlines()


def _unit(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize(("name", "interface", "port"), [
    ("whistle-source.service", "source", 8080), ("whistle-investigator.service", "investigator", 8081)])
def test_deploy_units_serve_the_onion_ports_sandboxed(name: str, interface: str, port: int) -> None:
    unit = _unit(name)
    assert f"HiddenServicePort 80 127.0.0.1:{port}" in TORRC.read_text()
    env = " ".join(unit["Environment"])
    assert f"WHISTLE_INTERFACE={interface}" in env and f"WHISTLE_BIND=127.0.0.1:{port}" in env
    assert unit["ExecStart"] == [
        "/opt/whistle/.venv/bin/gunicorn -c /opt/whistle/deploy/gunicorn.conf.py wsgi:app"]
    for key, value in {"User": "whistle", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ReadWritePaths": "/var/lib/whistle", "PrivateTmp": "yes", "ProtectHome": "yes",
                       "MemoryDenyWriteExecute": "yes", "CapabilityBoundingSet": "", "LimitCORE": "0",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6"}.items():
        assert unit[key] == [value], key
    assert "@system-service" in unit["SystemCallFilter"]


def test_deploy_backup_unit_runs_daily_backup() -> None:
    unit = _unit("whistle-backup.service")
    assert "whistle backup --out" in unit["ExecStart"][0] and unit["User"] == ["whistle"]
    assert _unit("whistle-backup.timer")["Persistent"] == ["true"]


@pytest.mark.parametrize("name", ["whistle-source.service", "whistle-investigator.service"])
def test_deploy_units_keep_worker_memory_and_logs_off_disk(name: str) -> None:
    unit = _unit(name)
    # Worker memory (reports being sealed, sources' keys) is never swapped out.
    assert unit["MemorySwapMax"] == ["0"]
    # Their log lines, each stamped to the microsecond by journald, go to the whistle namespace.
    assert unit["LogNamespace"] == ["whistle"]


def test_deploy_journald_namespace_is_volatile_and_short_lived() -> None:
    text = (UNITS / "journald@whistle.conf").read_text()
    settings = dict(ln.split("=", 1) for ln in text.splitlines()
                    if "=" in ln and not ln.startswith(("#", "[")))
    assert "[Journal]" in text.splitlines()
    assert settings["Storage"] == "volatile"  # never on disk
    assert settings["MaxRetentionSec"] == "1day" and settings["MaxFileSec"] == "1h"
    for forward in ("ForwardToSyslog", "ForwardToKMsg", "ForwardToConsole", "ForwardToWall"):
        assert settings[forward] == "no", forward
