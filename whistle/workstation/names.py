# SPDX-License-Identifier: AGPL-3.0-or-later
"""File names for what a source sent: safe on any OS, and unique in their folder in linear time.

A source chooses attachment names, and a hostile server can repeat one thousands of times, so a
duplicate must cost a set lookup, not a walk over the disk ("a (2).txt", "a (3).txt", … probed one
by one made 3,000 same-named files take minutes).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_MAX_NAME = 120
# Filesystems count bytes (255 on ext4, NTFS, APFS): 120 characters of CJK text are 360 bytes.
# 200 leaves room for a " (12345)" suffix and a temporary file's prefix and suffix.
_MAX_NAME_BYTES = 200


def safe_filename(name: str, fallback: str = "attachment") -> str:
    """A file name safe on any OS: no path parts, no control, format (bidi) or line-separator
    characters, no hidden or reserved names, no trailing dots or spaces, at most 120 characters
    and 200 UTF-8 bytes, extension kept.

    Characters taken out become ``_``: a file name cannot show ``\\u202e`` the way a text file
    does, because a backslash is a path separator on Windows. report.txt shows the name as sent,
    made visible (:func:`whistle.workstation.render.inert_line`), next to the name it was saved as.
    """
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(
        "_" if (unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")
                or c in '<>:"|?*') else c
        for c in name
    )
    # Leading dots hide a file; trailing dots and spaces are dropped or refused by Windows.
    cleaned = re.sub(r"^[\s.]+|[\s.]+$", "", cleaned) or fallback
    stem, dot, ext = cleaned.rpartition(".")
    if not dot:
        stem, ext = cleaned, ""
    # Windows treats NUL.tar.gz like NUL: check what comes before the first dot.
    if stem.split(".", 1)[0].strip().lower() in _RESERVED:
        stem = f"_{stem}"
    ext = ext[:16].rstrip()
    room = _MAX_NAME - (len(ext) + 1 if ext else 0)
    stem = stem[:room]
    tail = len(ext.encode("utf-8")) + 1 if ext else 0
    while stem and len(stem.encode("utf-8")) + tail > _MAX_NAME_BYTES:
        stem = stem[:-1]
    stem = stem.rstrip(" .") or fallback
    return f"{stem}.{ext}" if ext else stem


class NameSlots:
    """The names taken in one folder; :meth:`claim` numbers a duplicate in constant amortised time.

    Names are compared case-folded, because the unit's workstation may use a case-insensitive
    filesystem (macOS, Windows) where ``A.txt`` would overwrite ``a.txt``.
    """

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._taken = {name.casefold() for name in taken}
        # For each name asked for twice, the next number to try: never tried twice.
        self._next: dict[str, int] = {}

    def claim(self, name: str) -> str:
        """Return ``name``, or ``stem (N).ext`` with the smallest N not yet taken, and take it."""
        key = name.casefold()
        if key not in self._taken:
            self._taken.add(key)
            return name
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        suffix = f".{ext}" if ext else ""
        n = self._next.get(key, 2)
        candidate = f"{stem} ({n}){suffix}"
        while candidate.casefold() in self._taken:
            n += 1
            candidate = f"{stem} ({n}){suffix}"
        self._next[key] = n + 1
        self._taken.add(candidate.casefold())
        return candidate
