# SPDX-License-Identifier: AGPL-3.0-or-later
"""The server: web interfaces (web/), storage, limits, quotas, the production worker, the
server's commands. Runs online; never holds the unit's private key."""
