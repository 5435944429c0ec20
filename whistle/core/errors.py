# SPDX-License-Identifier: AGPL-3.0-or-later
"""The root of whistle's own exceptions. Each part raises subclasses of :class:`WhistleError`, so
the command line and the web error handlers can catch whistle's failures in one place."""

from __future__ import annotations


class WhistleError(Exception):
    """Something whistle refused or could not do; the message says what, for a person."""


class CommandError(WhistleError):
    """A command cannot proceed; the message is shown as one line."""
