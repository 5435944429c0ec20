# SPDX-License-Identifier: AGPL-3.0-or-later
"""The export bundle: a zip of ciphertext plus a manifest (docs/protocol.md section 6).

Writing needs no Flask and reading needs no database: the workstation reads bundles with only
this module and :mod:`whistle.core.crypto`. A bundle comes from the server, which is assumed hostile
some day, so the reader trusts nothing: member names, sizes, compression and the manifest are all
checked before anything is decrypted.
"""

from __future__ import annotations

import itertools
import json
import re
import struct
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from whistle.core.crypto import is_version
from whistle.core.enums import Channel, ItemKind, Outcome
from whistle.core.errors import WhistleError
from whistle.core.files import atomic_open

BUNDLE_FORMAT = "whistle-bundle"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_ENVELOPE_BYTES = 16 * 1024 * 1024
MAX_ATTACHMENT_BYTES = 64 * 1024**3
# A report's reply count in the manifest: a reply's number must fit an envelope's seq.
MAX_REPLIES = 2**31 - 2
_HEX = re.compile(r"^[0-9a-f]{8,64}\Z")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
# A channel code (core.enums.Channel, or one a newer server added): short, printable, safe to
# write into report.txt.
_CHANNEL = re.compile(r"^[a-z][a-z0-9-]{0,31}\Z")
_MEMBER = re.compile(r"^items/([0-9a-f]{8,64})/(envelope|attachment-([0-9]{1,4}))\.bin\Z")
# What zipfile raises on a damaged or hostile archive besides BadZipFile: a bad offset (OSError),
# a short member (EOFError), a name flagged UTF-8 that is not (UnicodeDecodeError), an unknown
# zip version (NotImplementedError). Found by tests/test_hostile.py.
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError)
# A zip local file header: signature, versions and flags, sizes, then name and extra lengths.
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
# A data descriptor after a member (flag bit 3) is at least CRC + two 4-byte sizes.
_MIN_DESCRIPTOR = 12


class BundleError(WhistleError):
    """A bundle is malformed, unsafe (path traversal, zip bomb) or incomplete."""


@dataclass
class BundleItem:
    """One exported item: where its envelope and attachments are in the zip."""

    id: str
    seq: int
    kind: str
    created_on: str
    # How a source's item came in (core.enums.Channel); None for a reply.
    channel: str | None
    envelope: str
    attachments: list[str] = field(default_factory=list)


@dataclass
class BundleReport:
    """One report in a bundle's manifest."""

    id: str
    received_on: str
    status: str
    channel: str
    source_public_key: str
    items: list[BundleItem] = field(default_factory=list)
    # Replies the server held for the case at export time (docs/protocol.md section 6): where
    # ``whistle reply`` starts numbering the next one. Optional when reading (0).
    replies: int = 0
    # Why the case was closed (core.enums.Outcome), None while it is open: the casebook's
    # transparency file counts closed cases by outcome. Optional when reading (None).
    outcome: str | None = None


def envelope_member(item_id: str) -> str:
    return f"items/{item_id}/envelope.bin"


def attachment_member(item_id: str, index: int) -> str:
    return f"items/{item_id}/attachment-{index}.bin"


class BundleWriter:
    """Writes a bundle atomically: the file appears complete under its name, or not at all."""

    def __init__(self, path: Path, *, created_on: str, unit_fingerprint: str) -> None:
        self._path = path
        self._manifest: dict[str, object] = {
            "format": BUNDLE_FORMAT, "v": 1, "created_on": created_on,
            "unit_fingerprint": unit_fingerprint, "reports": [],
        }
        self._ctx = atomic_open(path, 0o600)
        self._fh = self._ctx.__enter__()
        self._zip = zipfile.ZipFile(self._fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def add_member(self, name: str, pieces: Iterable[bytes]) -> None:
        """Stream one member into the zip; ciphertext does not compress, so it is stored."""
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_STORED
        with self._zip.open(info, "w", force_zip64=True) as out:
            for piece in pieces:
                out.write(piece)

    def add_report(self, report: BundleReport) -> None:
        reports = self._manifest["reports"]
        assert isinstance(reports, list)  # noqa: S101 - internal invariant
        # "sealed_by" is written as well as "channel" so that workstations older than the
        # channel (which require it) still read the bundle (docs/protocol.md section 6).
        reports.append({
            "id": report.id, "received_on": report.received_on, "status": report.status,
            "channel": report.channel, "sealed_by": legacy_sealed_by(report.channel, "report"),
            "source_public_key": report.source_public_key, "replies": report.replies,
            "outcome": report.outcome,
            "items": [{
                "id": item.id, "seq": item.seq, "kind": item.kind, "created_on": item.created_on,
                "channel": item.channel, "sealed_by": legacy_sealed_by(item.channel, item.kind),
                "envelope": item.envelope, "attachments": item.attachments,
            } for item in report.items],
        })

    def close(self) -> None:
        data = json.dumps(self._manifest, indent=1).encode("utf-8")
        self.add_member(MANIFEST, [data])
        self._zip.close()
        self._ctx.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        """Discard everything written: the target path is left as it was."""
        self._zip.close()
        self._ctx.__exit__(type(exc), exc, exc.__traceback__)


class BundleReader:
    """Opens a bundle and validates it fully before anything is read from it."""

    def __init__(self, path: Path) -> None:
        try:
            self._zip = zipfile.ZipFile(path, "r")
        except _ZIP_ERRORS as exc:
            raise BundleError(f"{path} is not a readable bundle: {exc}") from exc
        try:
            self.reports, self.meta = self._validate()
        except BaseException:
            self._zip.close()
            raise

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def _validate(self) -> tuple[list[BundleReport], dict[str, str]]:
        infos = self._zip.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise BundleError("bundle has duplicate member names")
        by_name = {i.filename: i for i in infos}
        for info in infos:
            if info.filename != MANIFEST and not _MEMBER.match(info.filename):
                raise BundleError(f"unexpected or unsafe member name {info.filename!r}")
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                # Ciphertext is stored; a compressed member can only be a zip bomb.
                raise BundleError(f"member {info.filename!r} is compressed; refused")
            if info.flag_bits & 0x1:
                raise BundleError("encrypted zip members are not supported")
        self._check_ranges(infos)
        if MANIFEST not in by_name:
            raise BundleError("bundle has no manifest.json")
        if by_name[MANIFEST].file_size > MAX_MANIFEST_BYTES:
            raise BundleError("manifest too large")
        try:
            doc = json.loads(self._zip.read(MANIFEST).decode("utf-8"))
        except (*_ZIP_ERRORS, RecursionError) as exc:  # deep JSON nesting: RecursionError
            raise BundleError(f"manifest is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT or not is_version(doc.get("v"), 1):
            raise BundleError("not a version-1 whistle bundle")
        referenced: set[str] = set()
        reports = [self._parse_report(r, by_name, referenced) for r in _list(doc, "reports")]
        unreferenced = set(names) - referenced - {MANIFEST}
        if unreferenced:
            raise BundleError(f"bundle has members the manifest does not list: {sorted(unreferenced)[:3]}")
        meta = {"created_on": _str(doc, "created_on"), "unit_fingerprint": _str(doc, "unit_fingerprint")}
        return reports, meta

    def _check_ranges(self, infos: list[zipfile.ZipInfo]) -> None:
        """Refuse members whose bytes overlap or lie outside the archive, before reading any.

        Python 3.11's zipfile does not check this (CVE-2024-0450): members that overlap (each one
        spanning the headers and data of the next) make a small file read as a huge one, even
        stored uncompressed. Each member must occupy its own range, from its local header to the
        end of its data, and every range must end before the central directory starts.
        """
        fp = self._zip.fp
        end = getattr(self._zip, "start_dir", None)
        if fp is None or not isinstance(end, int):
            raise BundleError("bundle is not readable as a zip file")
        ranges: list[tuple[int, int, str]] = []
        for info in infos:
            start = info.header_offset
            if start < 0 or start + _LOCAL_HEADER.size > end:
                raise BundleError(f"member {info.filename!r} lies outside the archive")
            try:
                fp.seek(start)
                header = fp.read(_LOCAL_HEADER.size)
            except _ZIP_ERRORS as exc:
                raise BundleError(f"member {info.filename!r} cannot be read: {exc}") from exc
            if len(header) != _LOCAL_HEADER.size:
                raise BundleError(f"member {info.filename!r} lies outside the archive")
            fields = _LOCAL_HEADER.unpack(header)
            if fields[0] != _LOCAL_SIGNATURE:
                raise BundleError(f"member {info.filename!r} has no local header where the "
                                  "directory says")
            stop = start + _LOCAL_HEADER.size + fields[9] + fields[10] + info.compress_size
            if info.flag_bits & 0x8:
                stop += _MIN_DESCRIPTOR
            if stop > end:
                raise BundleError(f"member {info.filename!r} runs past the end of the archive data")
            ranges.append((start, stop, info.filename))
        ranges.sort()
        for (_, stop, name), (start, _, after) in itertools.pairwise(ranges):
            if start < stop:
                raise BundleError(f"members {name!r} and {after!r} overlap (a zip bomb); refused")

    def _parse_report(
        self, raw: object, by_name: dict[str, zipfile.ZipInfo], referenced: set[str]
    ) -> BundleReport:
        if not isinstance(raw, dict):
            raise BundleError("manifest report entry is not an object")
        rid = _str(raw, "id")
        if not _HEX.match(rid):
            raise BundleError(f"bad report id {rid!r}")
        report = BundleReport(
            id=rid, received_on=_date(raw, "received_on"), status=_str(raw, "status"),
            channel=_report_channel(raw),
            source_public_key=_str(raw, "source_public_key"), replies=_replies(raw),
            outcome=_outcome(raw),
        )
        for rawitem in _list(raw, "items"):
            if not isinstance(rawitem, dict):
                raise BundleError("manifest item entry is not an object")
            iid = _str(rawitem, "id")
            seq = rawitem.get("seq")
            if not _HEX.match(iid) or not isinstance(seq, int) or isinstance(seq, bool):
                raise BundleError("bad item id or sequence number")
            atts = _list(rawitem, "attachments")
            if not all(isinstance(a, str) for a in atts):
                raise BundleError(f"item {iid} lists a non-text attachment name")
            kind = _str(rawitem, "kind")
            if kind not in tuple(ItemKind):
                raise BundleError(f"unknown item kind {kind!r}")
            item = BundleItem(
                id=iid, seq=seq, kind=kind, created_on=_date(rawitem, "created_on"),
                channel=_channel(rawitem, kind), envelope=_str(rawitem, "envelope"),
                attachments=[str(a) for a in atts],
            )
            expected = [envelope_member(iid)] + [
                attachment_member(iid, n) for n in range(len(item.attachments))]
            if [item.envelope, *item.attachments] != expected:
                raise BundleError(f"item {iid} names unexpected members")
            for name in expected:
                if name in referenced:
                    raise BundleError(f"member {name} is referenced twice")
                info = by_name.get(name)
                if info is None:
                    raise BundleError(f"bundle is incomplete: {name} is missing")
                limit = MAX_ENVELOPE_BYTES if name.endswith("envelope.bin") else MAX_ATTACHMENT_BYTES
                if info.file_size > limit:
                    raise BundleError(f"member {name} is larger than allowed")
                referenced.add(name)
            report.items.append(item)
        report.items.sort(key=lambda i: i.seq)
        return report

    def read_small(self, name: str) -> bytes:
        """Read an envelope member whole (bounded by the limits checked at open); a damaged
        member raises :class:`BundleError`."""
        try:
            return self._zip.read(name)
        except _ZIP_ERRORS as exc:
            raise BundleError(f"member {name} cannot be read: {exc}") from exc

    def iter_member(self, name: str, piece_size: int = 256 * 1024) -> Iterator[bytes]:
        """Stream a member in pieces; a damaged member (bad header, CRC mismatch, short read)
        raises :class:`BundleError`, so callers can tell it from a failure to write."""
        try:
            with self._zip.open(name, "r") as member:
                while piece := member.read(piece_size):
                    yield piece
        except _ZIP_ERRORS as exc:
            raise BundleError(f"member {name} cannot be read: {exc}") from exc

    def open(self, name: str) -> IO[bytes]:
        """Open an attachment member for streaming."""
        return self._zip.open(name, "r")

    def size(self, name: str) -> int:
        return self._zip.getinfo(name).file_size

    def iter_items(self) -> Iterator[tuple[BundleReport, BundleItem]]:
        for report in self.reports:
            for item in report.items:
                yield report, item


def legacy_sealed_by(channel: str | None, kind: str) -> str:
    """What a bundle before the channel said in ``sealed_by``: "browser" or "server" for a
    source's item (any channel but the browser is sealed by the server), "unit" for a reply."""
    if kind == ItemKind.REPLY or channel is None:
        return "unit"
    return "browser" if channel == Channel.BROWSER else "server"


def _report_channel(doc: dict[str, object]) -> str:
    channel = _channel(doc, ItemKind.REPORT)
    if channel is None:  # unreachable: only a reply has no channel
        raise BundleError("report entry has no channel")
    return channel


def _channel(doc: dict[str, object], kind: str) -> str | None:
    """An entry's channel: ``channel`` when present, else derived from a v1 bundle's
    ``sealed_by`` (browser → browser, server → server-form). None only for a reply."""
    if "channel" in doc:
        value = doc["channel"]
        if value is None and kind == ItemKind.REPLY:
            return None
        if not isinstance(value, str) or not _CHANNEL.match(value):
            raise BundleError("manifest field 'channel' is not a channel code")
        return value
    sealed_by = _str(doc, "sealed_by")
    if kind == ItemKind.REPLY:
        return None
    if sealed_by == "browser":
        return Channel.BROWSER.value
    if sealed_by == "server":
        return Channel.SERVER_FORM.value
    raise BundleError(f"manifest field 'sealed_by' is not browser or server: {sealed_by[:20]!r}")


def _replies(doc: dict[str, object]) -> int:
    """A report's ``replies`` count: absent in bundles written before protocol v2 (0)."""
    value = doc.get("replies", 0)
    if type(value) is not int or not 0 <= value <= MAX_REPLIES:
        raise BundleError("manifest field 'replies' is not a count")
    return value


def _outcome(doc: dict[str, object]) -> str | None:
    """A report's ``outcome``: an Outcome code, or null (open, or a bundle written before it)."""
    value = doc.get("outcome")
    if value is None:
        return None
    if not isinstance(value, str) or value not in tuple(Outcome):
        raise BundleError("manifest field 'outcome' is not an outcome code")
    return value


def _str(doc: dict[str, object], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise BundleError(f"manifest field {key!r} missing or not text")
    return value


def _date(doc: dict[str, object], key: str) -> str:
    value = _str(doc, key)
    if not _DATE.match(value):
        raise BundleError(f"manifest field {key!r} is not a date")
    return value


def _list(doc: dict[str, object], key: str) -> list[object]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise BundleError(f"manifest field {key!r} missing or not a list")
    return value
