# SPDX-License-Identifier: AGPL-3.0-or-later
"""Offline decryption of 1 GiB of attachments vs raw PyNaCl secretstream pull.

A real bundle (zip + manifest, written by whistle.core.bundle.BundleWriter as the server's export does)
holding one report with 4 attachments of 256 MiB, encrypted on the fly, is written once (not
timed). Then, alternately, in the same run:

- ``whistle.workstation.decrypt.decrypt_bundle`` (the workstation's ``whistle decrypt``) into a folder on
  the same disk;
- the baseline: the same ciphertext bytes read straight from the bundle file, 65,553-byte chunk by
  chunk (memory-bounded), through ``crypto_secretstream_xchacha20poly1305_pull``; plaintext
  discarded.

    .venv/bin/python bench/decrypt.py [--files 4] [--file-mib 256] [--reps 2]

Everything is written under one temporary folder ($WHISTLE_BENCH_TMP or the system's) and deleted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MiB, Result, banner, emit, median, tempdir  # noqa: E402

TARGET = 0.8


def encrypted_pieces(key: bytes, size: int, block: bytes) -> Iterator[bytes]:
    from whistle.core.crypto import StreamEncryptor

    enc = StreamEncryptor(key)
    yield enc.header
    left = size
    while left:
        piece = block[:min(left, len(block))]
        yield enc.update(piece)
        left -= len(piece)
    yield enc.finish()


def write_bundle(path: Path, n_files: int, file_size: int):  # type: ignore[no-untyped-def]
    """One report, ``n_files`` attachments of ``file_size`` bytes, sealed to a fresh unit key."""
    from whistle.core.bundle import (
        BundleItem,
        BundleReport,
        BundleWriter,
        attachment_member,
        envelope_member,
    )
    from whistle.core.crypto import (
        AttachmentRef,
        Envelope,
        UnitSecretKey,
        b64encode,
        new_stream_key,
        random_id,
        seal_envelope,
    )

    unit = UnitSecretKey.generate()
    keys = [new_stream_key() for _ in range(n_files)]
    refs = tuple(AttachmentRef(name=f"grabacion-{i}.bin", type="application/octet-stream",
                               size=file_size, key=k) for i, k in enumerate(keys))
    sealed = seal_envelope(Envelope(kind="report", category="corruption", body="bench",
                                    attachments=refs), unit.public_key)
    report_id, item_id = random_id(), random_id()
    writer = BundleWriter(path, created_on="2026-01-01", unit_fingerprint="bench")
    writer.add_member(envelope_member(item_id), [sealed])
    block = os.urandom(MiB)  # content does not matter to the cipher
    names = []
    for index, key in enumerate(keys):
        name = attachment_member(item_id, index)
        writer.add_member(name, encrypted_pieces(key, file_size, block))
        names.append(name)
    entry = BundleReport(id=report_id, received_on="2026-01-01", status="received",
                         channel="browser", source_public_key=b64encode(os.urandom(32)))
    entry.items.append(BundleItem(id=item_id, seq=1, kind="report", created_on="2026-01-01",
                                  channel="browser", envelope=envelope_member(item_id),
                                  attachments=names))
    writer.add_report(entry)
    writer.close()
    return unit, list(zip(names, keys, strict=True))


def member_offset(fh, info: zipfile.ZipInfo) -> int:  # type: ignore[no-untyped-def]
    """Where a stored member's data starts: after its local header."""
    fh.seek(info.header_offset)
    header = fh.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return int(info.header_offset + 30 + name_len + extra_len)


def raw_pull(path: Path, members: list[tuple[str, bytes]], out: Path | None = None) -> int:
    """Baseline: read each member's ciphertext from the file chunk by chunk and pull it; with
    ``out``, also write the plaintext to files there (what any decryptor must do)."""
    from nacl import bindings as s

    from whistle.core.crypto.stream import CIPHER_CHUNK_SIZE, STREAM_HEADER_BYTES

    total = 0
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    with path.open("rb", buffering=0) as fh:
        for name, key in members:
            info = infos[name]
            fh.seek(member_offset(fh, info))
            left = info.file_size
            state = s.crypto_secretstream_xchacha20poly1305_state()
            s.crypto_secretstream_xchacha20poly1305_init_pull(state, fh.read(STREAM_HEADER_BYTES), key)
            left -= STREAM_HEADER_BYTES
            dst = (out / name.replace("/", "_")).open("xb") if out is not None else None
            while left:
                chunk = fh.read(min(CIPHER_CHUNK_SIZE, left))
                left -= len(chunk)
                plain, _tag = s.crypto_secretstream_xchacha20poly1305_pull(state, chunk, None)
                total += len(plain)
                if dst is not None:
                    dst.write(plain)
            if dst is not None:
                dst.close()
    return total


def app_to_devnull(path: Path, members: list[tuple[str, bytes]]) -> None:
    """For information: whistle's own decryption path (zipfile member, decrypt_stream) writing
    to /dev/null, i.e. decrypt_bundle without the plaintext write."""
    from whistle.core.bundle import BundleReader
    from whistle.core.crypto import decrypt_stream

    with BundleReader(path) as bundle, open(os.devnull, "wb") as dst:
        for name, key in members:
            with bundle.open(name) as src:
                decrypt_stream(src, dst, key)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--file-mib", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    banner("decrypt")

    from whistle.workstation.decrypt import decrypt_bundle

    file_size = args.file_mib * MiB
    plain_total = args.files * file_size
    with tempdir("whistle-bench-decrypt-") as root:
        bundle = root / "bundle.zip"
        t0 = time.perf_counter()
        unit, members = write_bundle(bundle, args.files, file_size)
        print(f"bundle of {args.files} x {args.file_mib} MiB written in "
              f"{time.perf_counter() - t0:.1f} s (not timed): {bundle.stat().st_size} bytes")
        app_s, raw_s, raw_write_s, null_s = [], [], [], []
        for rep in range(args.reps):
            t0 = time.perf_counter()
            got = raw_pull(bundle, members)
            raw_s.append(time.perf_counter() - t0)
            assert got == plain_total
            out = root / f"raw-{rep}"
            out.mkdir()
            t0 = time.perf_counter()
            raw_pull(bundle, members, out)
            raw_write_s.append(time.perf_counter() - t0)
            shutil.rmtree(out)
            t0 = time.perf_counter()
            app_to_devnull(bundle, members)
            null_s.append(time.perf_counter() - t0)
            out = root / f"out-{rep}"
            t0 = time.perf_counter()
            summary = decrypt_bundle(bundle, unit, out)
            app_s.append(time.perf_counter() - t0)
            assert summary.attachments == args.files
            written = sum(p.stat().st_size for p in out.rglob("*.bin"))
            assert written == plain_total, written
            shutil.rmtree(out)
            print(f"rep {rep + 1}: raw pull {raw_s[-1]:.2f} s, raw pull + write {raw_write_s[-1]:.2f} s, "
                  f"decrypt_bundle {app_s[-1]:.2f} s, whistle path to /dev/null {null_s[-1]:.2f} s")

    app_tp = plain_total / median(app_s) / 1e6
    raw_tp = plain_total / median(raw_s) / 1e6
    ratio = app_tp / raw_tp
    emit(Result(
        benchmark="decrypt", metric=f"whistle.workstation.decrypt.decrypt_bundle, {args.files} x "
                                    f"{args.file_mib} MiB attachments",
        value=app_tp, unit="MB/s (plaintext)",
        baseline="raw PyNaCl secretstream pull, same bytes, 64 KiB chunks",
        baseline_value=raw_tp, ratio=ratio, target=f">= {TARGET}", passed=ratio >= TARGET,
        raw={"decrypt_bundle seconds": [round(x, 3) for x in app_s],
             "raw pull seconds": [round(x, 3) for x in raw_s],
             "raw pull + write plaintext seconds (info)": [round(x, 3) for x in raw_write_s],
             "ratio vs raw pull + write (info)": round(median(raw_write_s) / median(app_s), 3),
             "whistle path without the write, to /dev/null, seconds (info)":
                 [round(x, 3) for x in null_s],
             "ratio of that vs raw pull (info)": round(median(raw_s) / median(null_s), 3)},
        note="decrypt_bundle also writes the 1 GiB of plaintext to disk (same disk)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
