# SPDX-License-Identifier: AGPL-3.0-or-later
"""whistle: an anonymous, encrypted whistleblower drop.

The web application lives behind :func:`create_app`; ``whistle.core.crypto``, ``whistle.core.bundle`` and
``whistle.workstation.decrypt`` are usable without Flask (the offline workstation needs only those).
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from whistle.server.config import Config


def create_app(config: Config | None = None) -> Flask:
    """Build the Flask application (imported lazily so offline tools never import Flask)."""
    from whistle.server.app import create_app as _create_app

    return _create_app(config)
