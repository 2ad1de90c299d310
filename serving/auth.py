"""The bearer-token check: one definition for the app's views and the HTTP edge
(``serving.rsgi``, which refuses a protected POST before it reads the body)."""

from __future__ import annotations

import hmac

#: The WSGI environ key the edge sets when it has checked the token of a request and found it
#: right (no header can produce it: headers arrive as ``HTTP_*`` keys).
AUTHORIZED = "serving.authorized"
#: The environ key of a list of callables the edge (serving/rsgi.py) runs after the response
#: is handed to the client.
AFTER_RESPONSE = "serving.after_response"
CHALLENGE = 'Bearer realm="serving"'
INVALID_CHALLENGE = 'Bearer realm="serving", error="invalid_token"'


def auth_error(given: str | None, expected: bytes) -> tuple[str, str] | None:
    """``None`` when the ``Authorization`` value ``given`` carries the token; else the 401's
    message and its ``WWW-Authenticate`` challenge (the field is ``Authorization``)."""
    if given is None:
        return "missing bearer token", CHALLENGE
    # The scheme is case-insensitive (RFC 9110 section 11.1), the token is not. WSGI hands
    # headers over as latin-1 str; compare bytes (constant time) so any input is comparable.
    scheme, _, credentials = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        credentials.strip(" ").encode("latin-1", "replace"), expected
    ):
        return "invalid bearer token", INVALID_CHALLENGE
    return None
