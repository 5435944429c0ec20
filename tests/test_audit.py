# SPDX-License-Identifier: AGPL-3.0-or-later
"""The audit log's hash chain: it verifies, and edits, deletions, reordering and (with a recorded
head) truncation are found at the right entry; ``whistle audit verify`` reports them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from whistle import cli
from whistle.server import audit
from whistle.server.config import Config
from whistle.server.db import make_engine
from whistle.server.models import AuditEntry, Base

ENTRIES = 5


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = create_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}", connect_args={"timeout": 0.2})
    Base.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    with sessionmaker(engine, expire_on_commit=False)() as session:
        yield session


def _fill(db: Session, n: int = ENTRIES) -> list[str]:
    hashes = []
    for i in range(n):
        entry = audit.record(db, f"inv{i % 2}", audit.STATUS_CHANGE if i % 2 else audit.LOGIN,
                             report_id="0123456789abcdef" if i % 2 else None,
                             detail=f"step {i} ñ")
        hashes.append(entry.hash)
    db.commit()
    return hashes


def _sql(db: Session, statement: str, **params: object) -> None:
    db.execute(text(statement), params)
    db.commit()
    db.expire_all()


def test_verify_accepts_intact_chain(db: Session) -> None:
    hashes = _fill(db)
    report = audit.verify(db)
    assert report == audit.AuditReport(ok=True, count=ENTRIES, head=hashes[-1])
    first, second = db.scalars(select(AuditEntry).order_by(AuditEntry.seq).limit(2)).all()
    assert first.seq == 1 and first.prev_hash == audit.GENESIS and second.prev_hash == first.hash


def test_verify_accepts_empty_log(db: Session) -> None:
    assert audit.verify(db) == audit.AuditReport(ok=True, count=0, head=audit.GENESIS)
    assert audit.verify(db, expect_head=audit.GENESIS).ok


def test_record_times_are_utc_minutes(db: Session) -> None:
    moment = dt.datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    entry = audit.record(db, "inv", audit.LOGIN, now=moment)
    db.commit()
    db.expire_all()
    stored = db.get(AuditEntry, entry.seq)
    assert stored is not None and stored.at == dt.datetime(2026, 3, 4, 10, 6)
    assert audit.verify(db).ok


def test_record_refuses_unknown_action(db: Session) -> None:
    with pytest.raises(audit.AuditError):
        audit.record(db, "inv", "source_login")


def test_record_rolls_back_with_the_callers_transaction(db: Session) -> None:
    _fill(db, 2)
    audit.record(db, "inv", audit.LOGOUT)
    db.rollback()
    assert audit.verify(db).count == 2
    audit.record(db, "inv", audit.LOGOUT)
    db.commit()
    assert audit.verify(db).count == 3 and audit.verify(db).ok


FIELD_EDITS = {
    "at": "UPDATE audit_log SET at = '2001-01-01 00:00:00.000000' WHERE seq = :seq",
    "actor": "UPDATE audit_log SET actor = 'someone-else' WHERE seq = :seq",
    "action": "UPDATE audit_log SET action = 'logout' WHERE seq = :seq",
    "report_id": "UPDATE audit_log SET report_id = 'ffffffffffffffff' WHERE seq = :seq",
    "detail": "UPDATE audit_log SET detail = detail || '.' WHERE seq = :seq",
    "prev_hash": "UPDATE audit_log SET prev_hash = :zeros WHERE seq = :seq",
    "hash": "UPDATE audit_log SET hash = :zeros WHERE seq = :seq",
    "seq": "UPDATE audit_log SET seq = 99 WHERE seq = :seq",
}


@pytest.mark.parametrize("field", sorted(FIELD_EDITS))
@pytest.mark.parametrize("seq", [1, 3, ENTRIES])
def test_verify_detects_edited_field_at_its_entry(db: Session, field: str, seq: int) -> None:
    _fill(db)
    zeros = "f" * 64 if seq == 1 else audit.GENESIS  # entry 1's prev_hash is already zeros
    _sql(db, FIELD_EDITS[field], seq=seq, zeros=zeros)
    report = audit.verify(db)
    assert not report.ok
    assert report.first_bad_seq == seq, report
    assert report.count == seq - 1


def test_verify_detects_deleted_middle_entry(db: Session) -> None:
    _fill(db)
    _sql(db, "DELETE FROM audit_log WHERE seq = 3")
    report = audit.verify(db)
    assert not report.ok and report.first_bad_seq == 3 and "missing" in report.reason


def test_verify_detects_deleted_and_renumbered_entries(db: Session) -> None:
    _fill(db)
    _sql(db, "DELETE FROM audit_log WHERE seq = 3")
    _sql(db, "UPDATE audit_log SET seq = seq - 1 WHERE seq > 3")
    report = audit.verify(db)
    assert not report.ok and report.first_bad_seq == 3  # seq is hashed: renumbering shows


def test_verify_detects_reordered_entries(db: Session) -> None:
    _fill(db)
    _sql(db, "UPDATE audit_log SET seq = 100 WHERE seq = 2")
    _sql(db, "UPDATE audit_log SET seq = 2 WHERE seq = 4")
    _sql(db, "UPDATE audit_log SET seq = 4 WHERE seq = 100")
    report = audit.verify(db)
    assert not report.ok and report.first_bad_seq == 2


def test_verify_detects_truncation_only_with_expected_head(db: Session) -> None:
    hashes = _fill(db)
    _sql(db, "DELETE FROM audit_log WHERE seq >= 4")
    plain = audit.verify(db)
    assert plain.ok and plain.count == 3 and plain.head == hashes[2]
    report = audit.verify(db, expect_head=hashes[-1])
    assert not report.ok and report.first_bad_seq == 4 and "removed" in report.reason


def test_verify_accepts_older_expected_head_after_growth(db: Session) -> None:
    hashes = _fill(db)
    audit.record(db, "inv", audit.LOGOUT)
    db.commit()
    assert audit.verify(db, expect_head=hashes[1].upper()).ok


def test_record_race_fails_loudly_instead_of_forking(engine: Engine) -> None:
    make = sessionmaker(engine, expire_on_commit=False)
    with make() as first, make() as second:
        audit.record(first, "inv1", audit.LOGIN)  # flushed: holds the write lock, not committed
        with pytest.raises(DBAPIError):
            audit.record(second, "inv2", audit.LOGIN)  # read the same last entry: seq 1 again
            second.commit()
        first.commit()
    with make() as check:
        assert audit.verify(check).ok
        assert check.scalar(select(func.count()).select_from(AuditEntry)) == 1


def _instance_session(config: Config) -> Session:
    return sessionmaker(make_engine(config.database_url), expire_on_commit=False)()


def test_cli_audit_verify_exit_codes(server_env: Config, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["init"]) == 0
    with _instance_session(server_env) as db:
        hashes = _fill(db)
    capsys.readouterr()
    assert cli.main(["audit", "verify"]) == 0
    assert capsys.readouterr().out.strip() == f"ok: {ENTRIES} entries, head {hashes[-1]}"
    assert cli.main(["audit", "verify", "--expect-head", hashes[2]]) == 0

    with _instance_session(server_env) as db:
        _sql(db, "DELETE FROM audit_log WHERE seq = 5")
    capsys.readouterr()
    assert cli.main(["audit", "verify"]) == 0  # a shorter chain is still a valid chain...
    capsys.readouterr()
    assert cli.main(["audit", "verify", "--expect-head", hashes[-1]]) == 1  # ...but not this one
    assert capsys.readouterr().err.startswith("audit log broken at entry 5: ")

    with _instance_session(server_env) as db:
        _sql(db, "UPDATE audit_log SET detail = 'changed' WHERE seq = 2")
    capsys.readouterr()
    assert cli.main(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("audit log broken at entry 2: ") and err.count("\n") == 1
