# SPDX-License-Identifier: AGPL-3.0-or-later
"""WSGI entry point: ``gunicorn wsgi:app``. Refuses to start (exit 1, one line) on a bad setup."""

import sys

from whistle import create_app
from whistle.core.crypto import CryptoError
from whistle.server.config import ConfigError
from whistle.server.instance import InstanceError

try:
    app = create_app()
except (ConfigError, InstanceError, CryptoError) as exc:
    print(f"whistle: refusing to start: {exc}", file=sys.stderr)
    sys.exit(1)
