# SPDX-License-Identifier: AGPL-3.0-or-later
"""The unit's offline casebook (docs/workstation.md): bundles imported into one folder holding an
SQLite database and the attachments, read, searched, annotated and answered through a local web UI
that listens on the loopback address only.

Everything here runs on the offline workstation. Like the rest of :mod:`whistle.workstation` it
imports the shared core and this package only, never the server. Importing, collecting replies and
exporting a case need nothing beyond the standard library and PyNaCl; only the web UI
(:mod:`whistle.workstation.casebook.web`, ``whistle casebook serve``) needs Flask, Flask-WTF and
Flask-Babel (requirements-casebook.txt).
"""
