# SPDX-License-Identifier: AGPL-3.0-or-later
"""whistle.core.bundle: the export zip is written atomically and read as if the server were hostile.

Also whistle.workstation.decrypt.safe_filename, which turns names chosen by a source (hostile too) into
file names that are safe on the investigator's workstation.
"""

from __future__ import annotations

import json
import os
import struct
import time
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from whistle.core import bundle as bundle_mod
from whistle.core.bundle import (
    BundleError,
    BundleItem,
    BundleReader,
    BundleReport,
    BundleWriter,
    attachment_member,
    envelope_member,
)
from whistle.workstation.decrypt import safe_filename

REPORT_ID = "0123456789abcdef"
ITEM_ID = "aaaaaaaabbbbbbbb"
ITEM2_ID = "ccccccccdddddddd"
FINGERPRINT = "F39A 2CAD 5841 1CD4 9F57 7E50 86B8 031F"


def _item(iid: str = ITEM_ID, seq: int = 0, attachments: int = 1, kind: str = "report") -> BundleItem:
    return BundleItem(id=iid, seq=seq, kind=kind, created_on="2025-03-01", channel="browser",
                      envelope=envelope_member(iid),
                      attachments=[attachment_member(iid, n) for n in range(attachments)])


def _report(*items: BundleItem) -> BundleReport:
    return BundleReport(id=REPORT_ID, received_on="2025-03-01", status="received", channel="browser",
                        source_public_key="A" * 43 + "=", items=list(items))


def _write_valid(path: Path) -> dict[str, bytes]:
    """A well-formed bundle: one report, a report item with two attachments and a message."""
    members = {
        envelope_member(ITEM_ID): os.urandom(1072),
        attachment_member(ITEM_ID, 0): os.urandom(5000),
        attachment_member(ITEM_ID, 1): os.urandom(41),
        envelope_member(ITEM2_ID): os.urandom(1072),
    }
    writer = BundleWriter(path, created_on="2025-03-02", unit_fingerprint=FINGERPRINT)
    for name, data in members.items():
        writer.add_member(name, [data[:100], data[100:]])
    writer.add_report(_report(_item(ITEM2_ID, seq=1, attachments=0, kind="message"),
                              _item(ITEM_ID, seq=0, attachments=2)))
    writer.close()
    return members


def _manifest(items: list[dict[str, object]] | None = None, **top: object) -> dict[str, object]:
    if items is None:
        items = [_item(attachments=1).__dict__]
    doc: dict[str, object] = {
        "format": "whistle-bundle", "v": 1, "created_on": "2025-03-02", "unit_fingerprint": FINGERPRINT,
        "reports": [{"id": REPORT_ID, "received_on": "2025-03-01", "status": "received",
                     "sealed_by": "browser", "source_public_key": "A" * 43 + "=", "items": items}],
    }
    doc.update(top)
    return doc


def _hand_zip(path: Path, members: list[tuple[str, bytes]], manifest: object | bytes | None = None,
              compress: dict[str, int] | None = None) -> Path:
    """A zip built by hand, as a hostile server could: names, compression and manifest are free."""
    compress = compress or {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names; we want them
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members:
                zf.writestr(zipfile.ZipInfo(name), data, compress_type=compress.get(name, zipfile.ZIP_STORED))
            if manifest is not None:
                raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
                zf.writestr(zipfile.ZipInfo("manifest.json"), raw, compress_type=zipfile.ZIP_STORED)
    return path


def _default_members() -> list[tuple[str, bytes]]:
    return [(envelope_member(ITEM_ID), b"e" * 1072), (attachment_member(ITEM_ID, 0), b"a" * 100)]


# --------------------------------------------------------------------------- writer + reader


def test_bundle_manifest_writes_channel_and_legacy_sealed_by(tmp_path: Path) -> None:
    """The manifest carries the channel, and the "sealed_by" that workstations older than the
    channel require ("server" for any channel but the browser)."""
    path = tmp_path / "export.zip"
    writer = BundleWriter(path, created_on="2025-03-02", unit_fingerprint=FINGERPRINT)
    writer.add_member(envelope_member(ITEM_ID), [b"e" * 1072])
    item = BundleItem(id=ITEM_ID, seq=1, kind="report", created_on="2025-03-01",
                      channel="server-form", envelope=envelope_member(ITEM_ID))
    writer.add_report(BundleReport(id=REPORT_ID, received_on="2025-03-01", status="received",
                                   channel="server-form", source_public_key="A" * 43 + "=",
                                   items=[item]))
    writer.close()
    with zipfile.ZipFile(path) as zf:
        doc = json.loads(zf.read("manifest.json"))
    [report] = doc["reports"]
    assert (report["channel"], report["sealed_by"]) == ("server-form", "server")
    assert (report["items"][0]["channel"], report["items"][0]["sealed_by"]) == ("server-form", "server")
    with BundleReader(path) as reader:
        assert reader.reports[0].channel == "server-form"
        assert reader.reports[0].items[0].channel == "server-form"


@pytest.mark.parametrize(("sealed_by", "channel"), [("browser", "browser"), ("server", "server-form")])
def test_bundle_reads_v1_sealed_by_as_channel(tmp_path: Path, sealed_by: str, channel: str) -> None:
    """A bundle from a server before the channel (only "sealed_by") reads with the channel derived."""
    item = {k: v for k, v in _item().__dict__.items() if k != "channel"}
    item["sealed_by"] = sealed_by
    doc = _manifest([item])
    doc["reports"][0]["sealed_by"] = sealed_by  # type: ignore[index]
    path = _hand_zip(tmp_path / "v1.zip", _default_members(), doc)
    with BundleReader(path) as reader:
        [report] = reader.reports
        assert report.channel == channel and report.items[0].channel == channel


@pytest.mark.parametrize("entry", [{"channel": "Browser\n"}, {"channel": 7}, {"channel": None},
                                   {"sealed_by": "unit"}, {}])
def test_bundle_refuses_bad_or_missing_channel(tmp_path: Path, entry: dict[str, object]) -> None:
    """A channel that is not a short lower-case code (it is written into report.txt), or neither
    field at all, is refused."""
    doc = _manifest()
    report = doc["reports"][0]  # type: ignore[index]
    del report["sealed_by"]
    report.update(entry)
    path = _hand_zip(tmp_path / "bad.zip", _default_members(), doc)
    with pytest.raises(BundleError, match="channel|sealed_by"):
        BundleReader(path)


def test_bundle_replies_count_written_and_optional_when_read(tmp_path: Path) -> None:
    """Each report's "replies" (protocol v2): written by the writer, 0 when a bundle from before
    it has none."""
    path = tmp_path / "export.zip"
    writer = BundleWriter(path, created_on="2025-03-02", unit_fingerprint=FINGERPRINT)
    writer.add_member(envelope_member(ITEM_ID), [b"e" * 1072])
    report = _report(_item(attachments=0))
    report.replies = 4
    writer.add_report(report)
    writer.close()
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("manifest.json"))["reports"][0]["replies"] == 4
    with BundleReader(path) as reader:
        assert reader.reports[0].replies == 4
    old = _hand_zip(tmp_path / "old.zip", _default_members(), _manifest())
    assert "replies" not in _manifest()["reports"][0]  # type: ignore[index]
    with BundleReader(old) as reader:
        assert reader.reports[0].replies == 0


def test_bundle_outcome_written_and_optional_when_read(tmp_path: Path) -> None:
    """Each report's "outcome": written by the writer (null while the case is open), null when a
    bundle from before it has none."""
    path = tmp_path / "export.zip"
    writer = BundleWriter(path, created_on="2025-03-02", unit_fingerprint=FINGERPRINT)
    writer.add_member(envelope_member(ITEM_ID), [b"e" * 1072])
    writer.add_member(envelope_member(ITEM2_ID), [b"e" * 1072])
    closed = _report(_item(attachments=0))
    closed.status, closed.outcome = "closed", "referred"
    writer.add_report(closed)
    open_case = _report(_item(ITEM2_ID, attachments=0))
    open_case.id = "fedcba9876543210"
    writer.add_report(open_case)
    writer.close()
    with zipfile.ZipFile(path) as zf:
        reports = json.loads(zf.read("manifest.json"))["reports"]
    assert [r["outcome"] for r in reports] == ["referred", None]
    with BundleReader(path) as reader:
        assert [r.outcome for r in reader.reports] == ["referred", None]
    old = _hand_zip(tmp_path / "old.zip", _default_members(), _manifest())
    assert "outcome" not in _manifest()["reports"][0]  # type: ignore[index]
    with BundleReader(old) as reader:
        assert reader.reports[0].outcome is None


def test_bundle_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    members = _write_valid(path)
    with BundleReader(path) as reader:
        assert reader.meta == {"created_on": "2025-03-02", "unit_fingerprint": FINGERPRINT}
        [report] = reader.reports
        assert report.id == REPORT_ID
        assert [i.seq for i in report.items] == [0, 1]  # sorted by seq
        items = list(reader.iter_items())
        assert [item.id for _, item in items] == [ITEM_ID, ITEM2_ID]
        for name, data in members.items():
            assert reader.size(name) == len(data)
            assert reader.read_small(name) == data
            with reader.open(name) as fh:
                assert fh.read() == data
    assert _leftovers(tmp_path) == ["export.zip"]


def test_bundle_writer_stores_members_uncompressed(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    _write_valid(path)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist()[-1] == "manifest.json"
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["format"] == "whistle-bundle" and manifest["v"] == 1
    assert manifest["reports"][0]["items"][1]["attachments"] == [
        f"items/{ITEM_ID}/attachment-0.bin", f"items/{ITEM_ID}/attachment-1.bin"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_bundle_hand_made_reference_is_accepted(tmp_path: Path) -> None:
    # The hostile-case helper builds valid bundles too: each refusal below is for its one defect.
    path = _hand_zip(tmp_path / "b.zip", _default_members(), _manifest())
    with BundleReader(path) as reader:
        assert len(reader.reports[0].items) == 1


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_bundle_writer_abort_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    writer = BundleWriter(path, created_on="2025-03-02", unit_fingerprint=FINGERPRINT)
    writer.add_member(envelope_member(ITEM_ID), [os.urandom(2048)])

    def failing() -> Iterator[bytes]:
        yield os.urandom(70_000)
        raise OSError("database went away")

    with pytest.raises(OSError) as info:
        writer.add_member(attachment_member(ITEM_ID, 0), failing())
    writer.abort(info.value)
    assert not path.exists()
    assert _leftovers(tmp_path) == []


def test_bundle_writer_abort_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    path.write_bytes(b"previous export")
    writer = BundleWriter(path, created_on="2025-03-02", unit_fingerprint=FINGERPRINT)
    writer.add_member(envelope_member(ITEM_ID), [b"x" * 10])
    writer.abort(RuntimeError("stop"))
    assert path.read_bytes() == b"previous export"
    assert _leftovers(tmp_path) == ["export.zip"]


# --------------------------------------------------------------------------- hostile bundles


@pytest.mark.parametrize("name", [
    "../x",
    "/etc/passwd",
    "items/../../x.bin",
    f"items/{ITEM_ID}/../../../x.bin",
    f"items/{ITEM_ID}/envelope.bin/../../evil",
    "..\\..\\windows\\evil.bin",
    f"items/{ITEM_ID.upper()}/envelope.bin",
    f"items/{ITEM_ID}/attachment-0.exe",
])
def test_bundlereader_refuses_unsafe_member_names(tmp_path: Path, name: str) -> None:
    # The unsafe name is both in the zip and in the manifest, as a hostile server would do it.
    item = _item(attachments=1).__dict__
    item["attachments"] = [name]
    members = [(envelope_member(ITEM_ID), b"e" * 1072), (name, b"pwned")]
    path = _hand_zip(tmp_path / "b.zip", members, _manifest([item]))
    with pytest.raises(BundleError, match="unsafe|unexpected"):
        BundleReader(path)


def test_bundlereader_refuses_duplicate_member_names(tmp_path: Path) -> None:
    members = _default_members() + [(attachment_member(ITEM_ID, 0), b"b" * 100)]
    path = _hand_zip(tmp_path / "b.zip", members, _manifest())
    with zipfile.ZipFile(path) as zf:
        assert [i.filename for i in zf.infolist()].count(attachment_member(ITEM_ID, 0)) == 2
    with pytest.raises(BundleError, match="duplicate"):
        BundleReader(path)


def test_bundlereader_refuses_duplicate_manifest(tmp_path: Path) -> None:
    members = _default_members() + [("manifest.json", json.dumps(_manifest()).encode())]
    path = _hand_zip(tmp_path / "b.zip", members, _manifest())
    with pytest.raises(BundleError, match="duplicate"):
        BundleReader(path)


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_bundlereader_refuses_compressed_member(tmp_path: Path, method: int) -> None:
    # Zip-bomb style: a small member that inflates to a lot.
    bomb = attachment_member(ITEM_ID, 0)
    members = [(envelope_member(ITEM_ID), b"e" * 1072), (bomb, bytes(10 * 1024 * 1024))]
    path = _hand_zip(tmp_path / "b.zip", members, _manifest(), compress={bomb: method})
    assert path.stat().st_size < 1024 * 1024
    with pytest.raises(BundleError, match="compressed"):
        BundleReader(path)


def test_bundlereader_refuses_compressed_manifest(tmp_path: Path) -> None:
    path = tmp_path / "b.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in _default_members():
            zf.writestr(name, data)
        zf.writestr("manifest.json", json.dumps(_manifest()), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(BundleError, match="compressed"):
        BundleReader(path)


def test_bundlereader_refuses_unlisted_extra_member(tmp_path: Path) -> None:
    members = _default_members() + [(attachment_member(ITEM_ID, 1), b"smuggled")]
    path = _hand_zip(tmp_path / "b.zip", members, _manifest())
    with pytest.raises(BundleError, match="does not list"):
        BundleReader(path)


def test_bundlereader_refuses_missing_member(tmp_path: Path) -> None:
    path = _hand_zip(tmp_path / "b.zip", _default_members()[:1], _manifest())
    with pytest.raises(BundleError, match="missing"):
        BundleReader(path)


def test_bundlereader_refuses_missing_manifest(tmp_path: Path) -> None:
    path = _hand_zip(tmp_path / "b.zip", _default_members(), None)
    with pytest.raises(BundleError, match="no manifest"):
        BundleReader(path)


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe", b"", b"[1,2"])
def test_bundlereader_refuses_manifest_not_json(tmp_path: Path, raw: bytes) -> None:
    path = _hand_zip(tmp_path / "b.zip", _default_members(), raw)
    with pytest.raises(BundleError, match="JSON"):
        BundleReader(path)


@pytest.mark.parametrize("manifest", [
    [1, 2, 3],
    "whistle-bundle",
    _manifest(format="something-else"),
    _manifest(format=None),
    _manifest(v=2),
    _manifest(v="1"),
    _manifest(v=None),
])
def test_bundlereader_refuses_wrong_format_or_version(tmp_path: Path, manifest: object) -> None:
    path = _hand_zip(tmp_path / "b.zip", _default_members(), manifest)
    with pytest.raises(BundleError, match="version-1"):
        BundleReader(path)


@pytest.mark.parametrize("bad", [123, None, ["x"], {"name": "x"}])
def test_bundlereader_refuses_non_string_attachment_name(tmp_path: Path, bad: object) -> None:
    item = _item(attachments=1).__dict__
    item["attachments"] = [bad]
    path = _hand_zip(tmp_path / "b.zip", _default_members(), _manifest([item]))
    with pytest.raises(BundleError, match="non-text"):
        BundleReader(path)


@pytest.mark.parametrize("field,value", [
    ("seq", "0"), ("seq", True), ("seq", None), ("id", "../../x"), ("id", "ZZZZZZZZ"),
    ("kind", "invoice"), ("created_on", "yesterday"), ("created_on", None), ("envelope", None),
    ("created_on", "2025-03-01\n"),
    ("attachments", "items/x/attachment-0.bin"),
])
def test_bundlereader_refuses_bad_item_fields(tmp_path: Path, field: str, value: object) -> None:
    item = _item(attachments=1).__dict__
    item[field] = value
    path = _hand_zip(tmp_path / "b.zip", _default_members(), _manifest([item]))
    with pytest.raises(BundleError):
        BundleReader(path)


def test_bundlereader_refuses_item_naming_another_items_member(tmp_path: Path) -> None:
    item = _item(attachments=0).__dict__
    item["envelope"] = envelope_member(ITEM2_ID)
    members = [(envelope_member(ITEM2_ID), b"e" * 1072)]
    path = _hand_zip(tmp_path / "b.zip", members, _manifest([item]))
    with pytest.raises(BundleError, match="unexpected members"):
        BundleReader(path)


def test_bundlereader_refuses_member_referenced_twice(tmp_path: Path) -> None:
    item = _item(attachments=1).__dict__
    path = _hand_zip(tmp_path / "b.zip", _default_members(), _manifest([item, dict(item, seq=1)]))
    with pytest.raises(BundleError, match="twice"):
        BundleReader(path)


@pytest.mark.parametrize("report_field,value", [
    ("id", "../.."), ("received_on", "2025/03/01"), ("items", None), ("source_public_key", 5),
    # Python's "$" also matches before a trailing newline: such an id would become a folder name
    # ending in a newline on the workstation.
    ("id", REPORT_ID + "\n"), ("received_on", "2025-03-01\n"),
    ("replies", -1), ("replies", True), ("replies", 1.0), ("replies", "2"), ("replies", None),
    ("replies", 2**31),
    ("outcome", "closed"), ("outcome", "Substantiated"), ("outcome", 1), ("outcome", True),
    ("outcome", ["duplicate"]), ("outcome", "duplicate\n"),
])
def test_bundlereader_refuses_bad_report_fields(tmp_path: Path, report_field: str, value: object) -> None:
    manifest = _manifest()
    manifest["reports"][0][report_field] = value  # type: ignore[index]
    path = _hand_zip(tmp_path / "b.zip", _default_members(), manifest)
    with pytest.raises(BundleError):
        BundleReader(path)


def test_bundlereader_refuses_member_larger_than_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _hand_zip(tmp_path / "b.zip", _default_members(), _manifest())
    BundleReader(path).close()  # fine at the normal limit
    monkeypatch.setattr(bundle_mod, "MAX_ENVELOPE_BYTES", 1024)
    with pytest.raises(BundleError, match="larger than allowed"):
        BundleReader(path)


def test_bundlereader_refuses_attachment_larger_than_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _hand_zip(tmp_path / "b.zip", _default_members(), _manifest())
    monkeypatch.setattr(bundle_mod, "MAX_ATTACHMENT_BYTES", 99)
    with pytest.raises(BundleError, match="larger than allowed"):
        BundleReader(path)


def test_bundlereader_refuses_manifest_larger_than_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _hand_zip(tmp_path / "b.zip", _default_members(), _manifest())
    monkeypatch.setattr(bundle_mod, "MAX_MANIFEST_BYTES", 10)
    with pytest.raises(BundleError, match="manifest too large"):
        BundleReader(path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", os.urandom(2000)])
def test_bundlereader_refuses_non_zip(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "b.zip"
    path.write_bytes(content)
    with pytest.raises(BundleError, match="not a readable bundle"):
        BundleReader(path)


def test_bundlereader_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError):
        BundleReader(tmp_path / "nope.zip")


# --------------------------------------------------------------------------- safe_filename

RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


@pytest.mark.parametrize("name,expected", [
    ("../../etc/passwd", "passwd"),
    ("/etc/passwd", "passwd"),
    ("..\\..\\Windows\\System32\\evil.exe", "evil.exe"),
    ("C:\\Users\\ana\\informe.pdf", "informe.pdf"),
    ("a\x00b\nc\td.txt", "a_b_c_d.txt"),
    ("re\u202eport\u200b.pdf", "re_port_.pdf"),  # bidi override / zero-width: format chars
    ('what?<is>:"this"|*.txt', "what__is___this___.txt"),
    ("CON.txt", "_CON.txt"),
    ("con", "_con"),
    ("lpt1.log", "_lpt1.log"),
    ("Aux.PDF", "_Aux.PDF"),
    (".bashrc", "bashrc"),
    ("...hidden.txt", "hidden.txt"),
    ("  spaced.txt  ", "spaced.txt"),
    ("trailing.", "trailing"),
    ("", "attachment"),
    (".", "attachment"),
    ("..", "attachment"),
    ("/", "attachment"),
    ("   ", "attachment"),
    ("informe médico.pdf", "informe médico.pdf"),
    ("archivo", "archivo"),
])
def test_safe_filename_examples(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_safe_filename_fallback_is_used_for_empty() -> None:
    assert safe_filename("", fallback="adjunto-1") == "adjunto-1"


def test_safe_filename_nfc_normalises() -> None:
    nfd, nfc = unicodedata.normalize("NFD", "Pérez.pdf"), unicodedata.normalize("NFC", "Pérez.pdf")
    assert safe_filename(nfd) == nfc


def test_safe_filename_truncates_long_names_keeping_extension() -> None:
    result = safe_filename("a" * 500 + ".pdf")
    assert len(result) <= 120
    assert result.endswith(".pdf") and result.startswith("aaaa")
    long_ext = safe_filename("x." + "y" * 500)
    assert len(long_ext) <= 120 and long_ext.startswith("x.")


def _windows_stem(name: str) -> str:
    return name.split(".", 1)[0].lower()


def test_safe_filename_never_makes_a_hidden_file() -> None:
    # Dots and spaces interleaved at the start survive strip().strip(".").strip().
    for name in (". ..a.b", " . .x.y", ". . .bashrc"):
        assert not safe_filename(name).startswith("."), name


def test_safe_filename_reserved_name_with_double_extension() -> None:
    # Windows: "NUL.txt and NUL.tar.gz are both equivalent to NUL" (Microsoft's naming rules).
    for name in ("CON.tar.gz", "nul.txt.exe", "com1.a.b"):
        assert _windows_stem(safe_filename(name)) not in RESERVED, name


def test_safe_filename_no_trailing_space_or_dot_after_truncation() -> None:
    # Windows cannot open or delete a file whose name ends in a space or a dot.
    for name in ("x." + "y" * 15 + " z", "a" * 119 + " b", "a" * 119 + ". b"):
        result = safe_filename(name)
        assert not result.endswith((" ", ".")), repr(result)


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=300))
@example(". ..a.b")
@example("CON.tar.gz")
@example("x." + "y" * 15 + " z")
def test_safe_filename_is_always_a_plain_safe_name(name: str) -> None:
    result = safe_filename(name)
    assert result
    assert "/" not in result and "\\" not in result and "\x00" not in result
    assert result not in (".", "..")
    assert len(result) <= 120
    assert not any(unicodedata.category(c)[0] == "C" for c in result)
    assert not any(c in '<>:"|?*' for c in result)
    assert not result.startswith("."), f"{name!r} became a hidden file {result!r}"
    assert not result.endswith((" ", ".")), f"{name!r} became {result!r} (trailing space/dot)"
    # Windows treats CON, CON.txt and CON.tar.gz alike: the part before the first dot counts.
    assert _windows_stem(result) not in RESERVED, f"{name!r} became reserved name {result!r}"


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab./\\ ")), max_size=40))
def test_safe_filename_path_like_input_never_escapes(name: str) -> None:
    result = safe_filename(name)
    assert "/" not in result and "\\" not in result
    assert result not in (".", "..") and result


# --------------------------------------------------------------------------- overlapping members

def _local_header(name: str, data: bytes) -> bytes:
    raw = name.encode()
    return struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0x21,
                       zlib.crc32(data), len(data), len(data), len(raw), 0) + raw


def _raw_zip(body: bytes, entries: list[tuple[str, int, bytes]]) -> bytes:
    """``body`` followed by a central directory of (name, local header offset, member data)."""
    directory = b""
    for name, offset, data in entries:
        raw = name.encode()
        directory += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0x21,
                                 zlib.crc32(data), len(data), len(data), len(raw), 0, 0, 0, 0, 0,
                                 offset) + raw
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory),
                      len(body), 0)
    return body + directory + end


def _overlap_bomb(path: Path, members: int = 60, payload: int = 100_000) -> None:
    """The classic overlap zip bomb (Fifield), stored: each member's data holds the local headers
    and data of every member after it, so the same bytes are read ``members`` times. Its manifest
    lists every member, so only the overlap is wrong."""
    names = [envelope_member(ITEM_ID)] + [attachment_member(ITEM_ID, n) for n in range(members - 1)]
    blob, entries = os.urandom(payload), []
    for name in reversed(names):
        header = _local_header(name, blob)
        entries.append((name, len(header), blob))  # offset fixed below
        blob = header + blob
    offset, placed = 0, []
    for name, header_len, data in reversed(entries):
        placed.append((name, offset, data))
        offset += header_len
    manifest = json.dumps(_manifest([_item(attachments=members - 1).__dict__])).encode()
    placed.append((MANIFEST_NAME, len(blob), manifest))
    path.write_bytes(_raw_zip(blob + _local_header(MANIFEST_NAME, manifest) + manifest, placed))


MANIFEST_NAME = "manifest.json"


def test_bundlereader_refuses_overlapping_members(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    _overlap_bomb(path)
    # Python 3.11's zipfile reads it without complaint (CVE-2024-0450): the attack is real.
    with zipfile.ZipFile(path) as zf:
        declared = sum(i.file_size for i in zf.infolist())
        assert zf.read(attachment_member(ITEM_ID, 57))[-100:] == zf.read(envelope_member(ITEM_ID))[-100:]
    assert declared > 50 * path.stat().st_size
    started = time.perf_counter()
    with pytest.raises(BundleError, match="overlap"):
        BundleReader(path)
    elapsed = time.perf_counter() - started
    print(f"overlap bomb of {path.stat().st_size} bytes declaring {declared} refused in {elapsed:.3f} s")
    assert elapsed < 2


def test_bundlereader_refuses_member_outside_archive(tmp_path: Path) -> None:
    envelope = b"e" * 1072
    body = _local_header(envelope_member(ITEM_ID), envelope) + envelope
    manifest = json.dumps(_manifest([_item(attachments=0).__dict__])).encode()
    entries = [(envelope_member(ITEM_ID), 0, envelope), (MANIFEST_NAME, len(body), manifest)]
    good = _raw_zip(body + _local_header(MANIFEST_NAME, manifest) + manifest, entries)
    (tmp_path / "good.zip").write_bytes(good)
    BundleReader(tmp_path / "good.zip").close()  # the hand-made zip itself is fine
    tail = _local_header(MANIFEST_NAME, manifest) + manifest
    far = [(envelope_member(ITEM_ID), 10**6, envelope), entries[1]]
    (tmp_path / "far.zip").write_bytes(_raw_zip(body + tail, far))
    with pytest.raises(BundleError, match="outside the archive|cannot be read"):
        BundleReader(tmp_path / "far.zip")
    # Data running into the central directory: the member claims more bytes than precede it.
    long = [(envelope_member(ITEM_ID), 0, envelope), (MANIFEST_NAME, len(body), manifest + b"x" * 50)]
    (tmp_path / "long.zip").write_bytes(_raw_zip(body + tail, long))
    with pytest.raises(BundleError, match="runs past the end|overlap"):
        BundleReader(tmp_path / "long.zip")
