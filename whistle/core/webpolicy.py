# SPDX-License-Identifier: AGPL-3.0-or-later
"""The response headers every whistle web page carries — the server's pages and the offline
casebook's alike — so that both interfaces keep the same policy (docs/security.md, "HTTP
hardening"). Plain data: no Flask here, the casebook imports nothing of the server."""

from __future__ import annotations

from collections.abc import Mapping

# Directives every page has; each interface adds what its own pages need (the server's scripts
# and worker; the casebook has no script at all, so default-src 'none' covers it).
BASE_CSP = (
    "default-src 'none'",
    "style-src 'self'",
    "img-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
)

BASE_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: Flask-WTF checks the Referer on HTTPS POSTs.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=(), "
                          "interest-cohort=()",
}


def csp(*extra: str) -> str:
    """The Content-Security-Policy value: :data:`BASE_CSP` with ``extra`` directives after
    ``default-src`` (so a reader sees the exceptions first)."""
    return "; ".join([BASE_CSP[0], *extra, *BASE_CSP[1:]])


def headers(policy: str) -> dict[str, str]:
    """Every header of :data:`BASE_HEADERS` plus ``policy`` as the CSP."""
    return {"Content-Security-Policy": policy, **BASE_HEADERS}
