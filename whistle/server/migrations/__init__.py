# SPDX-License-Identifier: AGPL-3.0-or-later
"""Alembic migrations of whistle's database, applied by ``whistle init`` and ``whistle upgrade``."""
