# SPDX-License-Identifier: AGPL-3.0-or-later
"""Investigator accounts: creation, password + TOTP authentication, resets. No Flask here.

Investigators are accountable and not anonymous, unlike sources: their accounts have names, and
what they do is written to the audit log (:mod:`whistle.server.audit`). Every function works inside the
caller's SQLAlchemy session; the caller commits.
"""

from __future__ import annotations

import datetime as dt
import hmac
import io
import re
import secrets
import time
from dataclasses import dataclass

import pyotp
import qrcode
import qrcode.image.svg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from whistle.core.errors import WhistleError
from whistle.core.passphrase import DerivationGate, wordlist
from whistle.server.models import Investigator

NAME_RE = re.compile(r"^[a-z0-9._-]{1,64}$")
TOTP_ISSUER = "whistle"
TOTP_DIGITS = 6
# One step either side of now: a phone clock up to 30 s off still works.
TOTP_WINDOW = 1
PASSWORD_WORDS = 6

# Production costs are argon2-cffi's defaults (argon2id, t=3, 64 MiB). Only the test suite's
# fixture replaces this object, to make hashing cheap; nothing else may.
password_hasher = PasswordHasher()

# Each verification holds its whole memory cost (64 MiB): a burst of logins waits here instead
# of exhausting the server's memory (the login route's global rate limit bounds the queue).
_hash_slots = DerivationGate(2)
# ... but never for long: after this many seconds without a free slot the caller gets
# passphrase.GateBusyError (the app answers 503 with Retry-After) and its worker thread is free.
HASH_WAIT_SECONDS = 5.0
_dummy_hashes: dict[tuple[int, int, int], str] = {}


class AccountError(WhistleError):
    """An account cannot be created or found. ``code`` says why, for a translated message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AuthenticationError(WhistleError):
    """Login refused. The message is the same whatever went wrong; ``reason`` is for the audit log.

    ``account`` is the account's name when the name exists (its failures are audited: investigators
    are accountable), ``None`` for an unknown name (never logged).
    """

    MESSAGE = "wrong name, password or code"

    def __init__(self, reason: str, account: str | None) -> None:
        super().__init__(self.MESSAGE)
        self.reason = reason
        self.account = account


@dataclass(frozen=True)
class NewAccount:
    """Credentials shown once to whoever creates or resets an account, then never again."""

    name: str
    password: str
    totp_secret: str
    totp_uri: str


def current_time() -> float:
    """Seconds since the epoch for TOTP checks; the test suite replaces it with a fake clock."""
    return time.time()


def normalise_name(name: str) -> str:
    """Names are compared case-insensitively: stored and looked up in lower case."""
    return name.strip().lower()


def generate_password() -> str:
    """Six words from the EFF long list joined by ``-`` (about 77 bits).

    Words rather than random characters because an investigator types this at least once, often
    from a printout; 77 bits behind argon2id and a per-account login throttle is far out of reach
    of guessing. The four hyphenated EFF words are left out so the joined form is unambiguous.
    """
    words = [w for w in wordlist("en") if w.isalpha()]
    return "-".join(secrets.choice(words) for _ in range(PASSWORD_WORDS))


def totp_uri(name: str, secret: str) -> str:
    """The ``otpauth://`` URI an authenticator app enrols from (issuer "whistle")."""
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=TOTP_ISSUER)


def _hash(password: str) -> str:
    with _hash_slots.slot(HASH_WAIT_SECONDS):
        return password_hasher.hash(password)


def _verify(stored_hash: str, password: str) -> bool:
    with _hash_slots.slot(HASH_WAIT_SECONDS):
        try:
            return bool(password_hasher.verify(stored_hash, password))
        except (VerificationError, InvalidHashError):
            return False


def _dummy_hash() -> str:
    # Hashed with the current hasher's costs so an unknown name costs as much as a known one.
    key = (password_hasher.time_cost, password_hasher.memory_cost, password_hasher.parallelism)
    if key not in _dummy_hashes:
        # Under the gate too: the first unknown-name logins of a burst would each hash at once.
        _dummy_hashes[key] = _hash(secrets.token_urlsafe(16))
    return _dummy_hashes[key]


def find_account(session: Session, name: str) -> Investigator | None:
    """The account called ``name`` (any case), or ``None``."""
    canonical = normalise_name(name)
    if not NAME_RE.match(canonical):
        return None  # never a stored name (and PostgreSQL refuses a NUL in text: a 500)
    return session.scalars(select(Investigator).where(Investigator.name == canonical)).one_or_none()


def get_account(session: Session, name: str) -> Investigator:
    """The account called ``name``; :class:`AccountError` ``unknown`` if there is none."""
    account = find_account(session, name)
    if account is None:
        raise AccountError("unknown", f"no account named {normalise_name(name)!r}")
    return account


def create_investigator(session: Session, name: str, *, is_admin: bool = False) -> NewAccount:
    """Add an account with a generated password and TOTP secret; return them (shown once)."""
    canonical = normalise_name(name)
    if not NAME_RE.match(canonical):
        raise AccountError(
            "invalid_name",
            "a name is 1 to 64 characters: lowercase letters, digits, dot, dash, underscore",
        )
    taken = session.scalar(
        select(func.count()).select_from(Investigator).where(Investigator.name == canonical)
    )
    if taken:
        raise AccountError("name_taken", f"an account named {canonical!r} already exists")
    password = generate_password()
    secret = pyotp.random_base32()
    session.add(Investigator(
        name=canonical,
        password_hash=_hash(password),
        totp_secret=secret,
        totp_last_step=0,
        is_admin=is_admin,
        disabled=False,
        session_version=1,
        created_on=dt.datetime.now(dt.UTC).date(),
    ))
    session.flush()
    return NewAccount(name=canonical, password=password, totp_secret=secret,
                      totp_uri=totp_uri(canonical, secret))


def _matching_step(secret: str, code: str, now: float, last_step: int) -> int | None:
    """The newest time step within the window whose code is ``code`` and is after ``last_step``."""
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS)
    current = totp.timecode(dt.datetime.fromtimestamp(now, dt.UTC))
    found = None
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        # Compare every candidate (no early exit) so timing does not say which step matched.
        if hmac.compare_digest(totp.generate_otp(step), code) and step > last_step:
            found = step
    return found


def authenticate(session: Session, name: str, password: str, code: str, *,
                 now: float | None = None) -> Investigator:
    """Check name, password and TOTP code; return the account or raise :class:`AuthenticationError`.

    Exactly one password verification runs whether or not the name exists, so response time does
    not reveal which names exist. A TOTP code is accepted once: its time step must be later than
    the last accepted one (``totp_last_step``), which this records. The caller commits.
    Raises :class:`whistle.core.passphrase.GateBusyError` (neither a success nor a failure) when no
    hashing slot frees within :data:`HASH_WAIT_SECONDS`.
    """
    account = find_account(session, name)
    ok = _verify(account.password_hash if account else _dummy_hash(), password)
    if account is None:
        raise AuthenticationError("unknown_name", None)
    if not ok:
        raise AuthenticationError("wrong_password", account.name)
    if account.disabled:
        raise AuthenticationError("disabled", account.name)
    code = code.strip().replace(" ", "")
    if not re.fullmatch(rf"\d{{{TOTP_DIGITS}}}", code):
        raise AuthenticationError("wrong_code", account.name)
    when = current_time() if now is None else now
    step = _matching_step(account.totp_secret, code, when, account.totp_last_step)
    if step is None:
        # Tell a replay from a wrong code in the audit log: a replay means someone saw the code.
        replay = _matching_step(account.totp_secret, code, when, -1) is not None
        raise AuthenticationError("replayed_code" if replay else "wrong_code", account.name)
    account.totp_last_step = step
    if password_hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hash(password)
    return account


def set_disabled(account: Investigator, disabled: bool) -> None:
    """Disable or re-enable an account; either way every existing session of it ends."""
    account.disabled = disabled
    account.session_version += 1


def reset_totp(account: Investigator) -> str:
    """Give the account a new TOTP secret (the old one stops working); return its ``otpauth`` URI."""
    account.totp_secret = pyotp.random_base32()
    # Steps of the old secret mean nothing for the new one.
    account.totp_last_step = 0
    account.session_version += 1
    return totp_uri(account.name, account.totp_secret)


def reset_password(account: Investigator) -> str:
    """Give the account a new generated password and return it (shown once)."""
    password = generate_password()
    account.password_hash = _hash(password)
    account.session_version += 1
    return password


def _qr(uri: str) -> qrcode.QRCode:
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
    qr.add_data(uri)
    qr.make(fit=True)
    return qr


def totp_qr_terminal(uri: str) -> str:
    """The enrolment QR code as text for a terminal (two modules per character, half blocks).

    Drawn light-on-dark, as most terminals are dark: the light modules and the quiet zone are the
    printed blocks, so the phone sees dark modules on a light square.
    """
    buf = io.StringIO()
    _qr(uri).print_ascii(out=buf, invert=True)
    return buf.getvalue()


def totp_qr_svg(uri: str) -> str:
    """The enrolment QR code as inline SVG markup: paths with ``fill`` attributes, no ``style``.

    Inline, not an ``<img src="data:…">``: the CSP allows images from 'self' only.
    """
    image = _qr(uri).make_image(image_factory=qrcode.image.svg.SvgPathFillImage)
    markup = str(image.to_string(encoding="unicode"))
    markup = re.sub(r"^<\?xml[^>]*\?>\s*", "", markup)
    # Sized by the stylesheet (class "qr"), not by the millimetre size qrcode writes.
    markup = re.sub(r'\s(width|height)="[^"]*"', "", markup, count=2)
    return markup.replace("<svg ", '<svg class="qr" role="img" ', 1)
