# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the benchmarks share: a throwaway instance, gunicorn as deployed, services, results.

Every benchmark compares the app against a baseline measured *in the same run* on the same
machine and reports the ratio: the machine is shared and noisy, so absolute figures from two runs
are not comparable, ratios mostly are.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from whistle.server.config import Config

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
GUNICORN_CONF = REPO / "deploy" / "gunicorn.conf.py"
MiB = 1024 * 1024
MB = 1000 * 1000

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_POSTGRES = "postgresql+psycopg://whistle:whistle@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


# --- Results ----------------------------------------------------------------------------------


@dataclass
class Result:
    """One row of the results table."""

    benchmark: str
    metric: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    ratio: float
    target: str
    passed: bool
    raw: dict[str, object] = field(default_factory=dict)
    note: str = ""

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"


def emit(result: Result) -> None:
    """Print one result and append it to $WHISTLE_BENCH_RESULTS (JSON lines) for run_all.py."""
    print(f"\n== {result.benchmark}: {result.metric}")
    for key, value in result.raw.items():
        print(f"   {key}: {fmt(value)}")
    print(f"   value    : {fmt(result.value)} {result.unit}")
    print(f"   baseline : {result.baseline} = {fmt(result.baseline_value)}")
    print(f"   ratio    : {result.ratio:.3f}   target: {result.target}   -> {result.verdict}")
    if result.note:
        print(f"   note     : {result.note}")
    sys.stdout.flush()
    out = os.environ.get("WHISTLE_BENCH_RESULTS")
    if out:
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(result) | {"date": dt.date.today().isoformat()}) + "\n")


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return str(value)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p95 of 200 values is the 190th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {"nproc": str(os.cpu_count()), "cpu": model, "loadavg": load}


def banner(name: str) -> None:
    m = machine()
    print(f"# {name} — {dt.date.today().isoformat()} — nproc {m['nproc']}, {m['cpu']}, "
          f"load average {m['loadavg']}")
    sys.stdout.flush()


# --- A throwaway instance --------------------------------------------------------------------


@dataclass
class Instance:
    """A temporary whistle instance: data folder, unit key pair, production argon2 costs."""

    root: Path
    environ: dict[str, str]
    secret_key: object  # whistle.core.crypto.UnitSecretKey

    @property
    def data_dir(self) -> Path:
        return Path(self.environ["WHISTLE_DATA_DIR"])

    def config(self) -> Config:
        from whistle.server.config import load_config

        return load_config(self.environ, cwd=self.root)


def make_instance(root: Path, *, database_url: str | None = None,
                  extra: dict[str, str] | None = None) -> Instance:
    """Generate a unit key (public half in keys/, as on a server) and create the instance with the
    production argon2 costs (t=3, 64 MiB: whistle.server.instance's defaults)."""
    from whistle.core.crypto import UnitSecretKey, UnitSigningKey
    from whistle.server.config import load_config
    from whistle.server.instance import load_or_create_secrets

    keys = root / "keys"
    keys.mkdir(parents=True)
    key = UnitSecretKey.generate()
    (keys / "unit.pub").write_text(key.public_key.to_file_text())
    (keys / "unit-sign.pub").write_text(UnitSigningKey.generate().verify_key.to_file_text())
    environ = {
        "WHISTLE_DATA_DIR": str(root / "instance"),
        "WHISTLE_UNIT_KEY": str(keys / "unit.pub"),
    }
    if database_url:
        environ["WHISTLE_DATABASE_URL"] = database_url
    environ.update(extra or {})
    cfg = load_config(environ, cwd=root)
    secrets_ = load_or_create_secrets(cfg)  # production costs: the defaults
    assert secrets_.argon2.time_cost == 3 and secrets_.argon2.memory_cost_kib == 64 * 1024
    return Instance(root=root, environ=environ, secret_key=key)


@contextlib.contextmanager
def tempdir(prefix: str) -> Iterator[Path]:
    """A temporary folder on the repository's disk (not tmpfs), removed afterwards."""
    base = Path(os.environ.get("WHISTLE_BENCH_TMP", "") or tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix=prefix, dir=base) as tmp:
        yield Path(tmp)


# --- gunicorn as deployed ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen  # type: ignore[type-arg]
    url: str
    log: Path

    def workers(self) -> list[int]:
        return child_pids(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_gunicorn(environ: dict[str, str], root: Path, *, app: str = "wsgi:app",
                   workers: int = 1, probe: str = "/api/v1/unit-key",
                   pythonpath: Path | None = None) -> Server:
    """``gunicorn -c deploy/gunicorn.conf.py APP`` with WHISTLE_BIND on a free loopback port,
    in a process group of its own. Only the given WHISTLE_* variables reach it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WHISTLE_", "GUNICORN_", "FORWARDED_ALLOW_IPS"))}
    tmp = root / "server-tmp"
    tmp.mkdir(exist_ok=True)
    # One interface per gunicorn, as deployed (the production configuration refuses "all").
    env["WHISTLE_INTERFACE"] = "source"
    env.update(environ, WHISTLE_BIND=f"127.0.0.1:{port}", WHISTLE_WORKERS=str(workers),
               TMPDIR=str(tmp), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)]
    if pythonpath is not None:
        cmd += ["--pythonpath", str(pythonpath)]
    cmd.append(app)
    log = root / f"gunicorn-{port}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
    server = Server(proc=proc, url=f"http://127.0.0.1:{port}", log=log)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(server.url + probe, timeout=2):  # noqa: S310
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.05)
    # Wait until every worker has forked.
    deadline = time.monotonic() + 30
    while len(server.workers()) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    return server


def child_pids(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return sorted(set(found))


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM … of a process in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Vm"):
            name, value = line.split(":", 1)
            out[name] = int(value.split()[0])
    return out


def get_csrf(conn, path: str = "/submit") -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """GET a page on an http.client connection; return (csrf token, session cookie header)."""
    conn.request("GET", path)
    resp = conn.getresponse()
    html = resp.read().decode()
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    if not token:
        raise RuntimeError(f"no csrf token on {path} (status {resp.status})")
    return token.group(1), cookie_from(resp, "")


def cookie_from(resp, current: str) -> str:  # type: ignore[no-untyped-def]
    for value in resp.headers.get_all("Set-Cookie") or []:
        m = re.match(r"\s*(whistle=[^;]*)", value)
        if m:
            return m.group(1)
    return current


# --- Services ---------------------------------------------------------------------------------


def postgres_url() -> str | None:
    """The PostgreSQL admin URL if a server answers ($WHISTLE_TEST_POSTGRES or .ci/services')."""
    url = os.environ.get("WHISTLE_TEST_POSTGRES", "") or DEFAULT_POSTGRES
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return None
    return url


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on that server, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = "whistle_bench_" + secrets.token_hex(5)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        # An autovacuum worker may still be analysing the fresh tables: DROP … WITH (FORCE) would
        # need the right to signal it, so wait for it instead.
        for attempt in range(60):
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                break
            except Exception:  # noqa: BLE001
                if attempt == 59:
                    print(f"could not drop database {name}; drop it by hand", file=sys.stderr)
                time.sleep(0.5)
        admin.dispose()


def redis_url() -> str | None:
    url = os.environ.get("WHISTLE_TEST_REDIS", "") or DEFAULT_REDIS
    try:
        import redis

        redis.Redis.from_url(url, socket_timeout=2).ping()
    except Exception:  # noqa: BLE001
        return None
    return url
