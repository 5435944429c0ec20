# SPDX-License-Identifier: AGPL-3.0-or-later
"""Production gunicorn configuration for whistle.

    gunicorn -c deploy/gunicorn.conf.py wsgi:app

Behind a Tor onion service every request arrives from 127.0.0.1, and the server may be seized some
day: nothing here may write a client address, a User-Agent or an exact time, and nothing may trust
what a client claims about itself. Environment variables (all optional):

    WHISTLE_BIND            address to listen on                      default 127.0.0.1:8000
    WHISTLE_WORKERS         worker processes                          default 1 (more need Redis)
    WHISTLE_THREADS         threads for pages and small posts         default 16
    WHISTLE_UPLOAD_THREADS  threads that stream attachments           default 16
    WHISTLE_CONNECTIONS     open connections per worker               default 1000
    WHISTLE_HEADER_TIMEOUT  seconds for a request head, "LOW-HIGH"    default 20-40
    WHISTLE_BODY_TIMEOUT    initial seconds for a request body        default 20
    WHISTLE_MIN_RATE        bytes/s that extend a head/body deadline  default 500
    WHISTLE_UPLOAD_MIN_RATE bytes/s an attachment upload must keep    default 4096
    WHISTLE_BUFFER_KB       bodies up to this are read before a thread sees them  default 2048
    WHISTLE_BUFFER_BUDGET_MB  memory for such bodies, per worker      default 256

plus the app's own ``WHISTLE_*`` variables (README.md). Bad values stop the server with one line.
"""

from __future__ import annotations

import os
import sys

import gunicorn.http.wsgi
from gunicorn import glogging


def _env_int(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        # SystemExit, not an exception: gunicorn would print a traceback for an exception.
        print(f"whistle: refusing to start: {name} must be a whole number between {lo} and {hi}, "
              f"got {raw!r}", file=sys.stderr)
        raise SystemExit(1)
    return value


# --- Where and how many ----------------------------------------------------------------------

# Loopback only: the onion service (or a reverse proxy on the same machine) is the only client.
bind = [os.environ.get("WHISTLE_BIND", "").strip() or "127.0.0.1:8000"]

# One process by default. A logged-in source's key is kept by the process that handled the login
# (whistle/server/source_sessions.py), and so are the rate-limit counters, unless both live in Redis
# (WHISTLE_RATELIMIT_STORAGE=redis://…). With two workers and no Redis the kernel hands each
# connection to either one, and a source is sent back to the passphrase page within a click or
# two (checked by hand: 25 of 30 case pages). So more than one worker requires Redis; note that
# the argon2 ceiling (WHISTLE_ARGON2_CONCURRENCY, 64 MiB each) then applies per worker.
workers = _env_int("WHISTLE_WORKERS", 1, 1, 64)
if workers > 1 and not os.environ.get("WHISTLE_RATELIMIT_STORAGE", "").strip().startswith(
        ("redis://", "rediss://", "redis+unix://")):
    print("whistle: refusing to start: WHISTLE_WORKERS above 1 needs WHISTLE_RATELIMIT_STORAGE="
          "redis://… (source sessions and rate limits must be shared by the workers)",
          file=sys.stderr)
    raise SystemExit(1)

# The source and investigator interfaces run as separate gunicorn instances (deploy/systemd/):
# sharing workers, a burst of investigator logins (argon2 password hashes) delayed source pages to
# 5.8 s. "all" is for the demo on one machine only; the production configuration refuses it.
_interface = os.environ.get("WHISTLE_INTERFACE", "").strip() or "all"
if _interface == "all":
    print("whistle: refusing to start: set WHISTLE_INTERFACE=source or WHISTLE_INTERFACE=investigator "
          "(one gunicorn per interface; \"all\" is for `whistle demo` only)", file=sys.stderr)
    raise SystemExit(1)

# whistle's own worker (whistle/server/worker.py): gunicorn's threads, but the main loop reads each request
# head and each small body into memory under deadlines and a minimum rate before a thread sees it,
# so slow clients cost a socket, never a thread. Attachments stream in a pool of their own.
# docs/deploy.md says why this model and not another, with the measurements.
worker_class = "whistle.server.worker.WhistleWorker"
threads = _env_int("WHISTLE_THREADS", 16, 1, 256)
_env_int("WHISTLE_UPLOAD_THREADS", 16, 1, 256)
# Open connections per worker. When all are taken the one that has waited longest without
# completing a request is closed for the newcomer, so idle or stalled connections cannot lock
# anyone out; beyond that, Tor's stream limits and proof of work (deploy/torrc) bound the load.
worker_connections = _env_int("WHISTLE_CONNECTIONS", 1000, 10, 100_000)


def _env_timeout_range(name: str, default: str) -> None:
    raw = os.environ.get(name, "").strip() or default
    low, _, high = raw.partition("-")
    try:
        ok = 1 <= float(low) <= float(high or low) <= 3600
    except ValueError:
        ok = False
    if not ok:
        print(f"whistle: refusing to start: {name} must be seconds, or LOW-HIGH seconds "
              f"(1 to 3600), got {raw!r}", file=sys.stderr)
        raise SystemExit(1)


_env_timeout_range("WHISTLE_HEADER_TIMEOUT", "20-40")
_env_int("WHISTLE_BODY_TIMEOUT", 20, 1, 3600)
_env_int("WHISTLE_MIN_RATE", 500, 1, 10_000_000)
_env_int("WHISTLE_UPLOAD_MIN_RATE", 4096, 1, 10_000_000)
_env_int("WHISTLE_BUFFER_KB", 2048, 64, 1_048_576)
_env_int("WHISTLE_BUFFER_BUDGET_MB", 256, 16, 1_048_576)

# Create the app once in the master, before forking: a bad setup (missing or malformed unit key,
# a private key in the key folder, bad WHISTLE_* value) stops gunicorn at once with wsgi.py's one
# line "whistle: refusing to start: …" and exit status 1. Without preloading, each worker fails
# on its own and the master respawns it for ever (checked: gunicorn never exits).
preload_app = True


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    """Drop database connections inherited from the master (preload_app opened one to create the
    schema): a SQLite or PostgreSQL connection must never be shared across fork()."""
    app = getattr(server.app, "callable", None)
    state = getattr(app, "extensions", {}).get("whistle")
    if state is not None:
        state.engine.dispose(close=False)


# --- Time limits -----------------------------------------------------------------------------

# How long a worker's main loop may go silent before the master kills it; requests run in threads
# and are not cut off by it (their deadlines are the worker's: WHISTLE_HEADER_TIMEOUT and friends).
timeout = 600
# On restart (SIGTERM/HUP), in-flight uploads get this long to finish before workers are killed.
# Keep systemd's TimeoutStopSec above it.
graceful_timeout = 120
# Idle keep-alive connections are closed after this: Tor Browser reconnects cheaply.
keepalive = 5

# --- What a client may send ------------------------------------------------------------------

# No whistle URL is long and browsers send about a dozen headers: gunicorn's limits for the
# request line and header size (written out), half its default header count. Beyond them gunicorn
# answers 414/431 itself. The body size limit is the app's (WHISTLE_MAX_UPLOAD_MB, 413 beyond).
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190

# Trust no proxy headers from anyone. gunicorn's default trusts 127.0.0.1 — and behind Tor every
# anonymous visitor *is* 127.0.0.1, so each of them could set the URL scheme (X-Forwarded-Proto)
# or SCRIPT_NAME/PATH_INFO. The app never uses the client address (X-Forwarded-For is ignored
# all the way through; there is no ProxyFix).
forwarded_allow_ips = ""
# Headers with underscores are dropped rather than merged with their dashed twins (the default,
# written out).
header_map = "drop"

# --- Logs: errors only, no address, no time of day ---------------------------------------------

# No access log: every line would hold an address, a path, a User-Agent and the exact time.
accesslog = None
# Errors go to stderr (the journal, under systemd) and nowhere else.
errorlog = "-"
loglevel = "warning"
# The app's own stdout/stderr are not copied into the error log file.
capture_output = False
proc_name = "whistle"


class WhistleLogger(glogging.Logger):
    """gunicorn's logger with the date only (no time of day) and no client address.

    gunicorn logs a malformed request at WARNING as "Invalid request from ip=ADDRESS: DETAIL",
    DETAIL quoting the request line or a header: both are replaced by a fixed message. The access
    log stays off even if a command-line flag or GUNICORN_CMD_ARGS turns it on.
    """

    datefmt = r"[%Y-%m-%d]"

    def warning(self, msg, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(msg, str) and msg.startswith("Invalid request from"):
            msg, args = "refused a malformed HTTP request", ()
        super().warning(msg, *args, **kwargs)

    def access(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        return


logger_class = WhistleLogger

# gunicorn >= 25.1 opens a control socket under $XDG_RUNTIME_DIR or ~/.gunicorn by default: not
# needed, and one more thing on disk. (Older gunicorn ignores the unknown setting.)
control_socket_disable = True
# The worker heartbeat file is anonymous already; keep it off the disk where memory exists.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108

# --- No server banner ------------------------------------------------------------------------

# gunicorn writes "Server: gunicorn" itself, ahead of the app's headers (there is no setting for
# it, and the app's after_request cannot remove it), which tells an onion service's visitors what
# software runs behind it. Drop the line from gunicorn's default response headers; the test
# (tests/test_gunicorn.py) checks that no Server header goes out.
_Response = gunicorn.http.wsgi.Response
if not getattr(_Response.default_headers, "_whistle_no_server", False):
    _default_headers = _Response.default_headers

    def _headers_without_server(self):  # type: ignore[no-untyped-def]
        return [h for h in _default_headers(self) if not h.lower().startswith("server:")]

    _headers_without_server._whistle_no_server = True  # type: ignore[attr-defined]
    _Response.default_headers = _headers_without_server
