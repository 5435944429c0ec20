# SPDX-License-Identifier: AGPL-3.0-or-later
"""Opening and checking bundle items on the workstation: what ``whistle decrypt`` and the
casebook's import share, so that both accept, and quarantine, exactly the same items.

- :class:`Keyring` opens an envelope with whichever unit key opens it (after a key rotation);
- :class:`CaseCheck` runs the protocol-v2 binding checks of one report's items in manifest order
  (docs/protocol.md section 6);
- :func:`open_item` opens one item and checks it against its manifest entry and its case;
- :func:`decrypt_member` decrypts one attachment stream of a bundle into a private temporary
  file, checking that it authenticates and has the size the envelope says.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from whistle.core.bundle import BundleItem, BundleReader, BundleReport
from whistle.core.crypto import (
    Binding,
    DecryptionError,
    Envelope,
    KeyFormatError,
    StreamFormatError,
    UnitSecretKey,
    b64decode,
    iter_decrypt,
    open_envelope,
)
from whistle.core.enums import ItemKind
from whistle.core.errors import WhistleError

# The code syntax of the deployment's categories (whistle/server/config.py). The workstation does
# not know which codes a deployment uses, only what a code can look like.
CATEGORY_CODE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")


class ItemRefusedError(WhistleError):
    """An item opened but does not match its manifest entry (kind, attachment count)."""


class BindingError(ItemRefusedError):
    """An item opened but is not bound to its case as the manifest says (docs/protocol.md
    section 6): moved or replayed from elsewhere, forged, or its source key differs."""


@dataclass(frozen=True)
class Keyring:
    """The unit keys to try, and how many envelopes each one opened."""

    keys: list[UnitSecretKey]
    opened: list[int]

    def open(self, sealed: bytes) -> Envelope:
        """Open with the first key that opens it; only a box that opens with none is an error."""
        failure: DecryptionError | None = None
        for index, key in enumerate(self.keys):
            try:
                envelope = open_envelope(sealed, key)
            except DecryptionError as exc:
                failure = exc
                continue
            self.opened[index] += 1
            return envelope
        if len(self.keys) == 1 and failure is not None:
            raise failure  # the one-key message, unchanged
        raise DecryptionError(f"envelope does not open with any of the {len(self.keys)} keys "
                              "(wrong keys or altered)")


@dataclass
class CaseCheck:
    """The binding checks of one report's items, in manifest order (docs/protocol.md section 6).

    A v2 report's sealed source key must be the manifest's; every v2 message's source key must
    be the report's and the manifest's, its case tag the report's (or, without the report in this
    bundle, the tag of the case's other messages); sealed item numbers strictly increase, and a
    gap between two items is reported. A v1 (unbound) message on a case bound by v2 is refused.
    Only items that pass move the case's state on.
    """

    manifest_key: bytes | None
    report: Binding | None = None
    report_version: int | None = None
    tag: bytes | None = None
    last_seq: int | None = None
    bound: bool = False

    @classmethod
    def for_report(cls, report: BundleReport) -> CaseCheck:
        try:
            key: bytes | None = b64decode(report.source_public_key, size=32)
        except KeyFormatError:
            key = None  # every bound item then differs from the manifest
        return cls(manifest_key=key)

    def check(self, kind: str, envelope: Envelope) -> tuple[str, list[tuple[int, int]]]:
        """Check one opened item; return what its ``Binding:`` line says (a key of
        :func:`binding_text`) and the gaps before it (first, last missing number). Raise
        :class:`BindingError` naming the reason when it is not bound to this case."""
        binding = envelope.binding
        if binding is None:
            if kind == ItemKind.REPORT:
                if self.last_seq is not None or self.report_version is not None:
                    raise BindingError("moved or replayed (a second report item in this case)")
                self.report_version = 1
                return "none_report", []
            if self.bound:
                raise BindingError("unbound (version-1) message on a case bound by protocol v2: "
                                   "moved or replayed")
            return "none_message", []
        if kind == ItemKind.REPORT:
            if self.last_seq is not None or self.report_version is not None:
                raise BindingError("moved or replayed (a second report item in this case)")
            self.report, self.report_version, self.bound = binding, 2, True
            self.tag = binding.case_tag
            self._check_manifest_key(binding)
            self.last_seq = 1
            return "report", []
        report = self.report
        tag_ok = self.tag is None or hmac.compare_digest(binding.case_tag, self.tag)
        key_ok = report is None or binding.source_public_key == report.source_public_key
        if not tag_ok and not (key_ok and binding.source_public_key == self.manifest_key):
            raise BindingError(f"moved or replayed (item {binding.seq} of another case: another "
                               "source key and case tag)")
        if not key_ok:
            raise BindingError("forged (source key differs from the report's)")
        if not tag_ok and report is not None:
            raise BindingError("forged (wrong case tag)")
        if not tag_ok:
            raise BindingError("case tag differs from the case's other messages and the report is "
                               "not in this bundle to tell which is right (export with --all)")
        self._check_manifest_key(binding)
        gaps: list[tuple[int, int]] = []
        if self.last_seq is not None:
            if binding.seq == self.last_seq:
                raise BindingError(f"moved or replayed (item {binding.seq} twice)")
            if binding.seq < self.last_seq:
                raise BindingError(f"moved or replayed (item {binding.seq} after item "
                                   f"{self.last_seq})")
            if binding.seq > self.last_seq + 1:
                gaps.append((self.last_seq + 1, binding.seq - 1))
        self.last_seq, self.bound = binding.seq, True
        if self.tag is None:
            self.tag = binding.case_tag
        if report is not None:
            return "message", gaps
        return ("message_v1_report" if self.report_version == 1 else "message_no_report"), gaps

    def _check_manifest_key(self, binding: Binding) -> None:
        if self.manifest_key is None or binding.source_public_key != self.manifest_key:
            raise BindingError("source key differs from the manifest (the server's copy of the "
                               "key was changed? a reply must go to the key sealed in the report)")


def open_item(keys: Keyring, sealed: bytes, item: BundleItem,
              case: CaseCheck) -> tuple[Envelope, str, list[tuple[int, int]]]:
    """Open one item's sealed envelope with the keyring and check it: its kind and attachment
    count agree with the manifest, and its binding to the case (``case``, fed the report's items
    in manifest order). Return the envelope, its ``Binding:`` state and the gaps before it; raise
    :class:`ItemRefusedError` (:class:`BindingError` for the binding) or a :class:`CryptoError`.
    Shared with the casebook's import (whistle.workstation.casebook.opening), which must accept
    and quarantine exactly what ``decrypt`` does."""
    envelope = keys.open(sealed)
    if envelope.kind != item.kind:
        raise ItemRefusedError(f"envelope says {envelope.kind!r}, manifest {item.kind!r}")
    if len(envelope.attachments) != len(item.attachments):
        raise ItemRefusedError(f"envelope lists {len(envelope.attachments)} attachments, "
                               f"bundle holds {len(item.attachments)}")
    binding, gaps = case.check(item.kind, envelope)
    return envelope, binding, gaps


def decrypt_member(bundle: BundleReader, member: str, key: bytes, *, expected: int, size: int,
                   folder: Path, advance: Callable[[int], None]) -> tuple[Path, str]:
    """Decrypt the attachment stream ``member`` (``size`` bytes in the bundle) into a new 0600
    file in ``folder``; return its path and the plaintext's SHA-256 (hex).

    Raises :class:`StreamFormatError` (or another ``CryptoError``) when the stream does not
    authenticate or its plaintext is not ``expected`` bytes — reading stops as soon as it is too
    long — and then leaves no file behind. ``advance`` is told every byte of the bundle handled,
    read or, after a failure, left unread."""
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=folder)
    # Plaintext for the unit only: said explicitly rather than left to how mkstemp creates it.
    os.fchmod(fd, 0o600)
    consumed = 0

    def pieces() -> Iterator[bytes]:
        nonlocal consumed
        for piece in bundle.iter_member(member):
            consumed += len(piece)
            advance(len(piece))
            yield piece

    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as dst:
            total = 0
            for piece in iter_decrypt(pieces(), key):
                total += len(piece)
                if total > expected:
                    raise StreamFormatError("attachment longer than the envelope says")
                digest.update(piece)
                dst.write(piece)
        if total != expected:
            raise StreamFormatError("attachment size differs from the envelope")
        return Path(tmp), digest.hexdigest()
    except BaseException:
        advance(size - consumed)  # what the failure left unread counts as handled
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
