# SPDX-License-Identifier: AGPL-3.0-or-later
"""Compress the large static files with brotli ahead of time: NAME.br beside each.

The server compresses its static files when it starts (whistle/server/static_files.py), except the
ones of at least ``PREBUILT_MIN`` bytes (the vendored libsodium.js builds), for which brotli's best
quality takes seconds: those are compressed here, once, and the .br files are checked in. Run this
after adding or upgrading such a file; tests/test_static_files.py fails while one is missing or
stale, and the server ignores (and redoes itself) a .br that does not decompress to its file.

    .venv/bin/python scripts/compress_static.py
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from whistle.server.static_files import build  # noqa: E402


def main() -> int:
    changed = build(REPO / "whistle" / "static")
    for path in changed:
        print(("wrote " if path.exists() else "deleted ") + str(path.relative_to(REPO)))
    if not changed:
        print("every .br is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
