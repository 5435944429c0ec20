# SPDX-License-Identifier: AGPL-3.0-or-later
"""Investigator accounts: creation, password + TOTP authentication, replay refusal, resets."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyotp
import pytest
from argon2 import PasswordHasher
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker
from support import Clock

from whistle.core.passphrase import wordlist
from whistle.server import accounts
from whistle.server.accounts import AccountError, AuthenticationError, authenticate, create_investigator
from whistle.server.models import Base, Investigator


@pytest.fixture
def db(fast_passwords: None) -> Iterator[Session]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with sessionmaker(engine, expire_on_commit=False)() as session:
        yield session
    engine.dispose()


def _code(secret: str, when: float, offset: int = 0) -> str:
    return str(pyotp.TOTP(secret).at(when, counter_offset=offset))


def test_create_investigator_then_authenticate(db: Session, clock: Clock) -> None:
    new = create_investigator(db, "Alice.M", is_admin=True)
    db.commit()
    assert new.name == "alice.m"
    assert new.totp_uri.startswith("otpauth://totp/whistle:alice.m?")
    assert "issuer=whistle" in new.totp_uri and f"secret={new.totp_secret}" in new.totp_uri
    account = authenticate(db, "ALICE.M", new.password, _code(new.totp_secret, clock.now))
    assert account.name == "alice.m" and account.is_admin and not account.disabled


def test_create_investigator_generates_six_eff_words(db: Session) -> None:
    password = create_investigator(db, "bob").password
    words = password.split("-")
    assert len(words) == 6 and all(w in wordlist("en") for w in words)
    assert create_investigator(db, "carol").password != password


@pytest.mark.parametrize("name", ["", "x" * 65, "ana maría", "ana/b", "ñandú", "a@b"])
def test_create_investigator_rejects_bad_names(db: Session, name: str) -> None:
    with pytest.raises(AccountError) as info:
        create_investigator(db, name)
    assert info.value.code == "invalid_name"


def test_create_investigator_names_unique_ignoring_case(db: Session) -> None:
    create_investigator(db, "dora")
    with pytest.raises(AccountError) as info:
        create_investigator(db, "DORA")
    assert info.value.code == "name_taken"


@pytest.mark.parametrize("case", ["wrong_password", "wrong_code", "unknown_name", "disabled",
                                  "malformed_code"])
def test_authenticate_failures_share_one_message(db: Session, clock: Clock, case: str) -> None:
    new = create_investigator(db, "erin")
    db.commit()
    name, password, code = "erin", new.password, _code(new.totp_secret, clock.now)
    if case == "wrong_password":
        password += "x"
    elif case == "wrong_code":
        code = f"{(int(code) + 1) % 1_000_000:06d}"
    elif case == "malformed_code":
        code = "12ab56"
    elif case == "unknown_name":
        name = "nobody"
    else:
        accounts.set_disabled(accounts.get_account(db, "erin"), True)
    with pytest.raises(AuthenticationError) as info:
        authenticate(db, name, password, code)
    assert str(info.value) == AuthenticationError.MESSAGE
    assert info.value.account == (None if case == "unknown_name" else "erin")


def test_authenticate_verifies_a_password_even_for_unknown_names(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = accounts.password_hasher

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
            calls.append("verify")
            return real.verify(hash, password)

    monkeypatch.setattr(accounts, "password_hasher", Counting(time_cost=1, memory_cost=8,
                                                              parallelism=1))
    with pytest.raises(AuthenticationError):
        authenticate(db, "ghost", "some password", "123456")
    assert calls == ["verify"]


def test_authenticate_refuses_replayed_code(db: Session, clock: Clock) -> None:
    new = create_investigator(db, "fay")
    code = _code(new.totp_secret, clock.now)
    authenticate(db, "fay", new.password, code)
    with pytest.raises(AuthenticationError) as info:
        authenticate(db, "fay", new.password, code)
    assert info.value.reason == "replayed_code"
    clock.advance(30)
    authenticate(db, "fay", new.password, _code(new.totp_secret, clock.now))


def test_authenticate_previous_step_accepted_once_then_refused_after_newer(
    db: Session, clock: Clock
) -> None:
    new = create_investigator(db, "gil")
    previous = _code(new.totp_secret, clock.now, offset=-1)
    authenticate(db, "gil", new.password, previous)  # a phone clock a little behind
    with pytest.raises(AuthenticationError):
        authenticate(db, "gil", new.password, previous)

    other = create_investigator(db, "hal")
    authenticate(db, "hal", other.password, _code(other.totp_secret, clock.now))
    with pytest.raises(AuthenticationError) as info:
        authenticate(db, "hal", other.password, _code(other.totp_secret, clock.now, offset=-1))
    assert info.value.reason == "replayed_code"


def test_authenticate_refuses_codes_outside_the_window(db: Session, clock: Clock) -> None:
    new = create_investigator(db, "ida")
    for offset in (-2, 2):
        with pytest.raises(AuthenticationError) as info:
            authenticate(db, "ida", new.password, _code(new.totp_secret, clock.now, offset=offset))
        assert info.value.reason == "wrong_code"


def test_authenticate_uses_explicit_now(db: Session, clock: Clock) -> None:
    new = create_investigator(db, "ivo")
    later = clock.now + 3600
    authenticate(db, "ivo", new.password, _code(new.totp_secret, later), now=later)


def test_reset_totp_invalidates_old_secret(db: Session, clock: Clock) -> None:
    new = create_investigator(db, "jan")
    account = accounts.get_account(db, "jan")
    version = account.session_version
    uri = accounts.reset_totp(account)
    assert account.session_version == version + 1
    assert account.totp_secret != new.totp_secret and f"secret={account.totp_secret}" in uri
    with pytest.raises(AuthenticationError):
        authenticate(db, "jan", new.password, _code(new.totp_secret, clock.now))
    authenticate(db, "jan", new.password, _code(account.totp_secret, clock.now))


def test_reset_password_replaces_password_and_ends_sessions(db: Session, clock: Clock) -> None:
    new = create_investigator(db, "kim")
    account = accounts.get_account(db, "kim")
    version = account.session_version
    password = accounts.reset_password(account)
    assert password != new.password and account.session_version == version + 1
    with pytest.raises(AuthenticationError):
        authenticate(db, "kim", new.password, _code(new.totp_secret, clock.now))
    authenticate(db, "kim", password, _code(new.totp_secret, clock.now))


def test_set_disabled_bumps_session_version(db: Session) -> None:
    create_investigator(db, "lou")
    account = accounts.get_account(db, "lou")
    accounts.set_disabled(account, True)
    assert account.disabled and account.session_version == 2
    accounts.set_disabled(account, False)
    assert not account.disabled and account.session_version == 3


def test_password_hash_is_argon2id_without_the_password(db: Session) -> None:
    new = create_investigator(db, "max")
    stored = accounts.get_account(db, "max").password_hash
    assert stored.startswith("$argon2id$")
    assert new.password not in stored
    assert not any(word in stored for word in new.password.split("-") if len(word) > 3)


def test_authenticate_rehashes_when_costs_rise(db: Session, clock: Clock,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    new = create_investigator(db, "ned")
    before = accounts.get_account(db, "ned").password_hash
    monkeypatch.setattr(accounts, "password_hasher",
                        PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
    account = authenticate(db, "ned", new.password, _code(new.totp_secret, clock.now))
    assert account.password_hash != before and "m=16,t=2" in account.password_hash


def test_production_hasher_uses_argon2_defaults() -> None:
    # The fixture lowers costs per test; the module's own hasher must keep argon2-cffi's defaults.
    default = PasswordHasher()
    hasher = accounts.password_hasher
    assert (hasher.time_cost, hasher.memory_cost) == (default.time_cost, default.memory_cost)


def test_totp_qr_svg_is_inline_markup_without_style(db: Session) -> None:
    uri = create_investigator(db, "ole").totp_uri
    svg = accounts.totp_qr_svg(uri)
    assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>")
    assert "style" not in svg and "<?xml" not in svg and 'fill="' in svg
    assert re.search(r'<svg [^>]*class="qr"', svg)


def test_totp_qr_terminal_draws_blocks(db: Session) -> None:
    text = accounts.totp_qr_terminal(create_investigator(db, "pia").totp_uri)
    lines = text.splitlines()
    assert len(lines) > 10 and "█" in text
    assert len({len(line) for line in lines if line}) == 1  # a square, every row the same width


def test_investigator_model_fields_after_create(db: Session) -> None:
    create_investigator(db, "quin")
    account = db.query(Investigator).one()
    assert account.totp_last_step == 0 and account.session_version == 1
    assert account.created_on is not None
