# SPDX-License-Identifier: AGPL-3.0-or-later
"""The offline workstation: decrypting bundles, sealing replies. Imports the shared core only:
no Flask, no database (docs/workstation.md)."""
