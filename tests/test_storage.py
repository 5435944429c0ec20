# SPDX-License-Identifier: AGPL-3.0-or-later
"""whistle.server.storage and .blobstore: confined paths, atomic writes, spool files, the blob store
interface's contract and the database store's chunks."""

from __future__ import annotations

import ast
import hashlib
import os
import stat
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, text
from sqlalchemy.orm import Session, sessionmaker

from whistle.core.files import StorageError, UnsafePathError, atomic_open, atomic_write, safe_join
from whistle.server.blobstore import (
    BlobDamagedError,
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    blob_store,
    read_bytes,
)
from whistle.server.db import create_schema, make_engine, make_sessionmaker
from whistle.server.models import BlobChunk
from whistle.server.storage import BLOB_CHUNK_SIZE, DatabaseBlobStore, SpoolFile

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


# --------------------------------------------------------------------------- the blob store
# The contract every BlobStore implementation meets (whistle.server.blobstore), run against each
# implementation: a second backend adds itself to STORES. Then the database store's own details.

STORES = {"database": DatabaseBlobStore}
MiB = 1024 * 1024


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'blobs.sqlite3'}")
    create_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> BlobStore:
    return STORES[request.param]()


@pytest.fixture
def sessions(engine: Engine, store: BlobStore) -> sessionmaker[Session]:
    return make_sessionmaker(engine, store)


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _count(session: Session, table: str) -> int:
    return session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608 - fixed names


@pytest.mark.parametrize("size", [0, 1, BLOB_CHUNK_SIZE, BLOB_CHUNK_SIZE * 5 // 2])
def test_blobstore_write_read_size_round_trip(sessions: sessionmaker[Session], store: BlobStore,
                                              size: int) -> None:
    data = os.urandom(size)
    with sessions.begin() as session:
        info = store.write(session, _pieces(data, 100_003))  # odd-sized pieces
    assert info.size == size
    with sessions() as session:
        assert store.size(session, info.id) == size
        assert b"".join(store.read(session, info.id)) == data
        assert read_bytes(session, info.id) == data


def test_blobstore_write_no_pieces_is_an_empty_blob(
    sessions: sessionmaker[Session], store: BlobStore,
) -> None:
    with sessions.begin() as session:
        blob_id = store.write(session, iter(())).id
    with sessions() as session:
        assert store.size(session, blob_id) == 0
        assert b"".join(store.read(session, blob_id)) == b""


def test_blobstore_write_gives_unique_random_hex_ids(
    sessions: sessionmaker[Session], store: BlobStore,
) -> None:
    with sessions.begin() as session:
        ids = {store.write(session, [b"x"]).id for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_blobstore_missing_blob_raises_storageerror(
    sessions: sessionmaker[Session], store: BlobStore,
) -> None:
    assert issubclass(BlobNotFoundError, StorageError)
    with sessions() as session:
        # At once, before any byte is asked for: a caller never starts writing a bundle member.
        with pytest.raises(BlobNotFoundError, match="not found"):
            store.read(session, "0" * 32)
        with pytest.raises(BlobNotFoundError):
            store.size(session, "0" * 32)


def test_blobstore_delete_removes_only_those_blobs(sessions: sessionmaker[Session], store: BlobStore) -> None:
    with sessions.begin() as session:
        gone = [store.write(session, [os.urandom(BLOB_CHUNK_SIZE + 1)]).id for _ in range(3)]
        kept = store.write(session, [b"kept"]).id
    with sessions.begin() as session:
        store.delete(session, [*gone, "f" * 32])  # an unknown id is ignored
    with sessions() as session:
        for blob_id in gone:
            with pytest.raises(BlobNotFoundError):
                store.read(session, blob_id)
        assert read_bytes(session, kept) == b"kept"
        assert [b.id for b in store.list(session)] == [kept]


def test_blobstore_list_gives_every_blob_in_id_order(
    sessions: sessionmaker[Session], store: BlobStore,
) -> None:
    with sessions.begin() as session:
        infos = [store.write(session, [b"y" * n]) for n in range(30)]
    with sessions() as session:
        assert list(store.list(session)) == sorted(infos, key=lambda b: b.id)


def test_blobstore_restore_keeps_the_given_id(sessions: sessionmaker[Session], store: BlobStore) -> None:
    data = os.urandom(BLOB_CHUNK_SIZE + 3)
    with sessions.begin() as session:
        assert store.restore(session, "ab" * 16, _pieces(data, 4096)) == BlobInfo("ab" * 16, len(data))
    with sessions() as session:
        assert read_bytes(session, "ab" * 16) == data


def test_blobstore_rollback_commits_nothing(sessions: sessionmaker[Session], store: BlobStore) -> None:
    data = os.urandom(BLOB_CHUNK_SIZE * 2 + 5)
    with sessions() as session:
        blob_id = store.write(session, _pieces(data, 65536)).id
        assert store.size(session, blob_id) == len(data)  # visible inside the transaction
        session.rollback()
    with sessions() as session:
        with pytest.raises(BlobNotFoundError):
            store.read(session, blob_id)
        assert list(store.list(session)) == []


def test_blobstore_failing_writer_leaves_nothing(sessions: sessionmaker[Session], store: BlobStore) -> None:
    def failing() -> Iterator[bytes]:
        yield os.urandom(BLOB_CHUNK_SIZE + 1)
        raise OSError("client went away")

    with sessions() as session:
        with pytest.raises(OSError, match="went away"):
            store.write(session, failing())
        session.rollback()
    with sessions() as session:
        assert list(store.list(session)) == []


def test_blobstore_streams_large_blobs_in_bounded_memory(sessions: sessionmaker[Session],
                                                         store: BlobStore) -> None:
    """48 MiB in and out with Python's allocations staying under 6 MiB: never whole in memory."""
    total, piece = 48 * MiB, 100_003
    written = hashlib.sha256()

    def pieces() -> Iterator[bytes]:
        left = total
        while left:
            data = os.urandom(min(piece, left))
            written.update(data)
            left -= len(data)
            yield data

    tracemalloc.start()
    try:
        with sessions.begin() as session:
            info = store.write(session, pieces())
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        read = hashlib.sha256()
        with sessions() as session:
            for chunk in store.read(session, info.id):
                read.update(chunk)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.size == total and read.digest() == written.digest()
    assert write_peak < 6 * MiB and read_peak < 6 * MiB, (write_peak, read_peak)


def test_blobstore_works_on_a_plain_connection(engine: Engine, store: BlobStore) -> None:
    """Backup and restore run on Core connections, not ORM sessions."""
    with engine.begin() as conn:
        info = store.write(conn, [b"over ", b"core"])
    with engine.connect() as conn:
        assert b"".join(store.read(conn, info.id)) == b"over core"
        assert list(store.list(conn)) == [info]


def test_blob_store_is_found_from_the_session(engine: Engine, store: BlobStore) -> None:
    with make_sessionmaker(engine, store)() as session:
        assert blob_store(session) is store
    assert isinstance(blob_store(make_sessionmaker(engine)()), DatabaseBlobStore)
    # Fail closed: a session made without one has no store to fall back on.
    with Session(engine) as session, pytest.raises(StorageError, match="no blob store"):
        blob_store(session)


# --------------------------------------------------------------------------- the database store


def test_databaseblobstore_cuts_fixed_size_chunks(engine: Engine) -> None:
    store = DatabaseBlobStore()
    data = os.urandom(BLOB_CHUNK_SIZE * 5 // 2)
    with make_sessionmaker(engine, store).begin() as session:
        info = store.write(session, _pieces(data, 100_003))
    with make_sessionmaker(engine, store)() as session:
        chunks = list(store.read(session, info.id))
        assert [len(c) for c in chunks] == [BLOB_CHUNK_SIZE, BLOB_CHUNK_SIZE, BLOB_CHUNK_SIZE // 2]
        assert _count(session, "blob_chunks") == 3


@pytest.mark.parametrize("missing_seq", [0, 1, 2])
def test_databaseblobstore_damaged_blob_raises_storageerror(engine: Engine, missing_seq: int) -> None:
    store = DatabaseBlobStore()
    sessions = make_sessionmaker(engine, store)
    with sessions.begin() as session:
        blob_id = store.write(session, [os.urandom(BLOB_CHUNK_SIZE * 5 // 2)]).id
    with sessions.begin() as session:
        session.execute(delete(BlobChunk).where(BlobChunk.blob_id == blob_id, BlobChunk.seq == missing_seq))
    with sessions() as session:
        with pytest.raises(BlobDamagedError, match="damaged"):
            b"".join(store.read(session, blob_id))
        with pytest.raises(StorageError):
            read_bytes(session, blob_id)


def test_databaseblobstore_delete_leaves_no_chunk(engine: Engine) -> None:
    store = DatabaseBlobStore()
    sessions = make_sessionmaker(engine, store)
    with sessions.begin() as session:
        ids = [store.write(session, [os.urandom(BLOB_CHUNK_SIZE + 1)]).id for _ in range(2)]
    with sessions.begin() as session:
        store.delete(session, ids)
    with sessions() as session:
        assert _count(session, "blob_chunks") == _count(session, "blobs") == 0


# Defined in models.py, used only by the store: anything else goes through the interface.
_STORE_ONLY = {"Blob", "BlobChunk"}
_ALLOWED = {Path("whistle/server/models.py"), Path("whistle/server/storage.py")}


def test_blobchunk_used_only_by_the_blob_store() -> None:
    root = Path(__file__).resolve().parent.parent
    offenders = []
    for path in sorted((root / "whistle").rglob("*.py")):
        rel = path.relative_to(root)
        if rel in _ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            offenders += [f"{rel}:{node.lineno} {n}" for n in names if n in _STORE_ONLY]
    assert offenders == [], "use whistle.server.blobstore, not the chunk tables"
