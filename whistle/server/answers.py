# SPDX-License-Identifier: AGPL-3.0-or-later
"""Refusals in the client's terms: JSON ``{"error", "message"}`` for the page script's API
(``/api/`` paths), the error page otherwise. One place, so every refusal looks the same."""

from __future__ import annotations

from flask import Response, jsonify, make_response, render_template, request


def wants_json() -> bool:
    """Whether this request came from the page's script (the JSON API) rather than a page."""
    return request.path.startswith("/api/")


def error_response(status: int, code: str, message: str, *, retry_after: int | None = None) -> Response:
    """``status`` with ``message`` (already translated): JSON with the error ``code`` for the API,
    the error page for a browser; ``Retry-After`` when a wait is known."""
    if wants_json():
        response = make_response(jsonify(error=code, message=message), status)
    else:
        response = make_response(render_template("error.html", code=status, message=message), status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response
