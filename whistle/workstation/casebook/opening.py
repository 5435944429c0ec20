# SPDX-License-Identifier: AGPL-3.0-or-later
"""Opening and checking one bundle item for the casebook with ``whistle decrypt``'s own code.

The casebook must accept exactly what ``decrypt`` accepts and quarantine exactly what it
quarantines, so nothing here decides: the keyring, the manifest agreement checks and the
protocol-v2 binding checks (source key, case tag, sequence numbers, unbound items on a bound
case) are those of :mod:`whistle.workstation.checks`, which ``decrypt`` uses; this module only
adapts them to an import that stores into a database instead of writing folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from whistle.core.bundle import BundleError, BundleItem, BundleReader, BundleReport
from whistle.core.crypto import CryptoError, Envelope, UnitSecretKey
from whistle.workstation import checks


class ItemCheckError(Exception):
    """An item that does not open or check out; ``part`` says which check (envelope, binding)."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(reason)
        self.part = part


@dataclass(frozen=True)
class Opened:
    """An item that opened and checked out: its envelope, the ``Binding:`` key decrypt would
    write, and the gaps in the case's numbers before it (first, last missing)."""

    envelope: Envelope
    binding: str
    gaps: list[tuple[int, int]] = field(default_factory=list)


class Keyring:
    """The unit keys to try, and how many envelopes each one opened (decrypt's keyring)."""

    def __init__(self, keys: list[UnitSecretKey]) -> None:
        self.opened = [0] * len(keys)
        self.ring = checks.Keyring(keys, self.opened)


class CaseChecker:
    """The binding state of one report's items, in manifest order (decrypt's case check)."""

    def __init__(self, report: BundleReport) -> None:
        self._case = checks.CaseCheck.for_report(report)

    def open(self, keyring: Keyring, bundle: BundleReader, item: BundleItem) -> Opened:
        """Open ``item``'s envelope and run decrypt's checks on it; raise
        :class:`ItemCheckError` (with the part decrypt would name) when it fails."""
        try:
            sealed = bundle.read_small(item.envelope)
            envelope, binding, gaps = checks.open_item(keyring.ring, sealed, item, self._case)
        except checks.BindingError as exc:
            raise ItemCheckError("binding", str(exc) or type(exc).__name__) from exc
        except (CryptoError, BundleError, checks.ItemRefusedError) as exc:
            raise ItemCheckError("envelope", str(exc) or type(exc).__name__) from exc
        return Opened(envelope, binding, list(gaps))


def is_category_code(code: str) -> bool:
    """Whether a sealed category has the syntax of a category code (decrypt's rule)."""
    return bool(checks.CATEGORY_CODE.match(code))

