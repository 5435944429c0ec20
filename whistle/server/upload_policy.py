# SPDX-License-Identifier: AGPL-3.0-or-later
"""Upload policy, declared on the view that receives the upload (docs/security.md, "Uploads and
plaintext").

A view that takes file parts says so with :func:`accepts` (re-exported by
:mod:`whistle.server.uploads`): whether its parts arrive as plaintext (sealed the moment they
arrive) or as ciphertext (spooled as they come), which file fields it reads, and which quota its
body counts against. The stream factory (uploads.py) and the quotas (quotas.py) read the
declaration from the view the request is routed to; a view without one gets a small in-memory
buffer, refused past 64 KiB, and no file part at all. Kept apart from uploads.py so that
quotas.py, which uploads.py imports, can read it too.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

from flask import current_app, request

F = TypeVar("F", bound=Callable[..., object])
QuotaKind = Literal["submit", "message"]
_ATTRIBUTE = "_whistle_upload"


class UploadPolicy(enum.Enum):
    """How a view's file parts arrive, and so where their bytes go."""

    # Plaintext from the JavaScript-off form: encrypted chunk by chunk as the bytes arrive, so
    # only ciphertext reaches the spool file (uploads.EncryptingSpool).
    PLAINTEXT = "plaintext"
    # Already encrypted (in the browser, or by the workstation): spooled as they come
    # (uploads.CiphertextSpool); the view checks its parts itself.
    CIPHERTEXT = "ciphertext"


@dataclass(frozen=True)
class UploadDeclaration:
    """What :func:`accepts` records on a view."""

    policy: UploadPolicy
    # The file fields kept for the view; None keeps every file part (the view checks them).
    fields: frozenset[str] | None
    # The quota the body counts against before it is read (quotas.py), or None for none.
    quota: QuotaKind | None


def accepts(policy: UploadPolicy, *, fields: Iterable[str] | None = None,
            quota: QuotaKind | None = None) -> Callable[[F], F]:
    """Declare that the decorated view takes uploads under ``policy``.

    ``fields`` names the file fields the view reads; any other file part is dropped before the
    view (and Flask-WTF, which would hand a file to a text validator) sees it. A plaintext view
    must name them: its form has text fields too. ``quota`` is ``"submit"`` (an anonymous report:
    the session's hourly bytes), ``"message"`` (a logged-in source: the case's daily messages and
    bytes) or None; every quota also counts against the global hourly bytes. Raises ValueError
    when the module defining the view is imported, not when a source first posts to it.
    """
    if quota not in (None, "submit", "message"):
        raise ValueError(f"unknown upload quota {quota!r}")
    names = None if fields is None else frozenset(fields)
    if policy is UploadPolicy.PLAINTEXT and not names:
        raise ValueError("a plaintext upload view must name its file fields")
    declaration = UploadDeclaration(policy=policy, fields=names, quota=quota)

    def mark(view: F) -> F:
        # On the function object itself, which Flask registers (whatever the decorator order
        # below the route); functools.wraps copies it onto wrappers applied afterwards.
        setattr(view, _ATTRIBUTE, declaration)
        return view

    return mark


def declared() -> UploadDeclaration | None:
    """The upload declaration of the view the current request is routed to, or None."""
    if request.endpoint is None:
        return None
    view = current_app.view_functions.get(request.endpoint)
    declaration = getattr(view, _ATTRIBUTE, None)
    return declaration if isinstance(declaration, UploadDeclaration) else None
