# SPDX-License-Identifier: AGPL-3.0-or-later
"""The shared core: what the server and the offline workstation both run — crypto, the envelope,
bundle and replies formats, passphrases, files. It imports nothing of the server or workstation."""
