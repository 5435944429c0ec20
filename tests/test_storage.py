# SPDX-License-Identifier: AGPL-3.0-or-later
"""whistle.server.storage: confined paths, atomic writes and chunked ciphertext blobs in the database."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from whistle.core.files import StorageError, UnsafePathError, atomic_open, atomic_write, safe_join
from whistle.server.db import create_schema, make_engine, make_sessionmaker
from whistle.server.models import Blob, BlobChunk
from whistle.server.storage import BLOB_CHUNK_SIZE, SpoolFile, iter_blob, read_blob, write_blob

# --------------------------------------------------------------------------- safe_join


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.mark.parametrize("parts", [
    ("..",),
    ("../x",),
    ("a", "..", "..", "x"),
    ("a/../../x",),
    ("items/../../etc/passwd",),
])
def test_safe_join_refuses_dotdot_escape(root: Path, parts: tuple[str, ...]) -> None:
    with pytest.raises(UnsafePathError):
        safe_join(root, *parts)


@pytest.mark.parametrize("parts", [("/etc/passwd",), ("a", "/etc"), ("//x",)])
def test_safe_join_refuses_absolute_paths(root: Path, parts: tuple[str, ...]) -> None:
    with pytest.raises(UnsafePathError):
        safe_join(root, *parts)


@pytest.mark.parametrize("parts", [("a\x00b",), ("a", "\x00"), ("",), ("a", "")])
def test_safe_join_refuses_nul_and_empty(root: Path, parts: tuple[str, ...]) -> None:
    with pytest.raises(UnsafePathError):
        safe_join(root, *parts)


def test_safe_join_refuses_symlink_escaping_root(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "filelink").symlink_to(outside / "secret.txt")
    with pytest.raises(UnsafePathError):
        safe_join(root, "link", "secret.txt")
    with pytest.raises(UnsafePathError):
        safe_join(root, "link")
    with pytest.raises(UnsafePathError):
        safe_join(root, "filelink")


def test_safe_join_accepts_symlink_staying_inside(root: Path) -> None:
    (root / "real").mkdir()
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    assert safe_join(root, "alias", "f.bin") == (root / "real" / "f.bin").resolve()


def test_safe_join_accepts_nested_normal_names(root: Path) -> None:
    assert safe_join(root, "a", "b", "c.bin") == root.resolve() / "a" / "b" / "c.bin"
    assert safe_join(root, "items/0123abcd/envelope.bin") == root.resolve() / "items/0123abcd/envelope.bin"
    assert safe_join(root, "informe final (2).pdf") == root.resolve() / "informe final (2).pdf"
    assert safe_join(root, "a/../b") == root.resolve() / "b"  # stays inside: fine
    assert safe_join(root) == root.resolve()


def test_unsafepatherror_is_a_storageerror() -> None:
    assert issubclass(UnsafePathError, StorageError)


# --------------------------------------------------------------------------- atomic writes


def _leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_atomic_write_creates_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"
    atomic_write(target, b"hola")
    assert target.read_bytes() == b"hola"
    assert _leftovers(target.parent, {"out.bin"}) == []


def test_atomic_write_mode_is_0600(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    target.chmod(0o644)
    old_umask = os.umask(0)
    try:
        atomic_write(target, b"new")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    atomic_write(tmp_path / "other.bin", b"x", mode=0o640)
    assert stat.S_IMODE((tmp_path / "other.bin").stat().st_mode) == 0o640


def test_atomic_write_replaces_old_content(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    atomic_write(target, b"first version, longer")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert _leftovers(tmp_path, {"out.bin"}) == []


def test_atomic_open_preserves_old_content_if_writer_raises(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"precious")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(target) as fh:
        fh.write(b"half-written garbage")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"precious"
    assert _leftovers(tmp_path, {"out.bin"}) == []


def test_atomic_open_leaves_nothing_if_writer_raises_on_new_file(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    with pytest.raises(KeyboardInterrupt), atomic_open(target) as fh:
        fh.write(b"x" * 100_000)
        raise KeyboardInterrupt
    assert not target.exists()
    assert _leftovers(tmp_path, set()) == []


# --------------------------------------------------------------------------- spool files


def test_spoolfile_round_trip_and_leaves_no_named_file(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = SpoolFile(spool_dir)
    data = os.urandom(BLOB_CHUNK_SIZE + 10)
    spool.write(data[:7])
    spool.write(data[7:])
    assert spool.size == len(data)
    assert b"".join(spool.iter_chunks()) == data
    # Anonymous where the OS allows: no name in the spool folder an operator could find.
    if os.name == "posix":
        assert list(spool_dir.iterdir()) == []
    spool.close()
    assert list(spool_dir.iterdir()) == []


# --------------------------------------------------------------------------- blobs


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'blobs.sqlite3'}")
    create_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _chunk_count(session: Session, blob_id: str) -> int:
    return session.execute(
        select(func.count()).select_from(BlobChunk).where(BlobChunk.blob_id == blob_id)
    ).scalar_one()


@pytest.mark.parametrize("size", [0, 1, BLOB_CHUNK_SIZE, BLOB_CHUNK_SIZE * 5 // 2])
def test_blob_round_trip_through_sqlite(sessions: sessionmaker[Session], size: int) -> None:
    data = os.urandom(size)
    with sessions() as session:
        blob = write_blob(session, _pieces(data, 100_003))  # odd-sized pieces
        blob_id = blob.id
        session.commit()
    with sessions() as session:
        assert session.get(Blob, blob_id).size == size  # type: ignore[union-attr]
        chunks = list(iter_blob(session, blob_id))
        assert b"".join(chunks) == data
        assert all(len(c) <= BLOB_CHUNK_SIZE for c in chunks)
        expected_rows = max(1, -(-size // BLOB_CHUNK_SIZE))
        assert _chunk_count(session, blob_id) == expected_rows == len(chunks)
        assert read_blob(session, blob_id) == data


def test_blob_from_no_pieces_is_empty(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        blob_id = write_blob(session, iter(())).id
        session.commit()
    with sessions() as session:
        assert read_blob(session, blob_id) == b""


def test_blob_ids_are_unique_random_hex(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        ids = {write_blob(session, [b"x"]).id for _ in range(20)}
        session.commit()
    assert len(ids) == 20
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize("missing_seq", [0, 1, 2])
def test_blob_damaged_raises_storageerror(sessions: sessionmaker[Session], missing_seq: int) -> None:
    data = os.urandom(BLOB_CHUNK_SIZE * 5 // 2)
    with sessions() as session:
        blob_id = write_blob(session, [data]).id
        session.commit()
    with sessions() as session:
        session.execute(delete(BlobChunk).where(BlobChunk.blob_id == blob_id,
                                                BlobChunk.seq == missing_seq))
        session.commit()
    with sessions() as session:
        with pytest.raises(StorageError, match="damaged"):
            b"".join(iter_blob(session, blob_id))
        with pytest.raises(StorageError):
            read_blob(session, blob_id)


def test_blob_unknown_id_raises_storageerror(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, pytest.raises(StorageError, match="not found"):
        list(iter_blob(session, "0" * 32))


def test_blob_nothing_committed_on_rollback(sessions: sessionmaker[Session]) -> None:
    data = os.urandom(BLOB_CHUNK_SIZE * 2 + 5)
    with sessions() as session:
        blob_id = write_blob(session, _pieces(data, 65536)).id
        # Flushed (visible inside the transaction), not committed.
        assert _chunk_count(session, blob_id) == 3
        session.rollback()
    with sessions() as session:
        assert session.get(Blob, blob_id) is None
        assert session.execute(select(func.count()).select_from(BlobChunk)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(Blob)).scalar_one() == 0


def test_blob_writer_exception_leaves_nothing(sessions: sessionmaker[Session]) -> None:
    def failing() -> Iterator[bytes]:
        yield os.urandom(BLOB_CHUNK_SIZE + 1)
        raise OSError("client went away")

    with sessions() as session:
        with pytest.raises(OSError):
            write_blob(session, failing())
        session.rollback()
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(BlobChunk)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(Blob)).scalar_one() == 0
