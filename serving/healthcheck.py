"""The image's HEALTHCHECK: exit 0 when this container's server is ready.

    python -m serving.healthcheck

Asks ``/health/ready`` over loopback on the port the server wrote to ``SERVING_ADDRESS_FILE``
when it started (so a ``SERVING_BIND`` given at ``run`` time is honoured even where the check
runs without that variable), else on the port of ``SERVING_BIND``. Standard library only: the
image has no curl.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
import urllib.error
import urllib.request


def main() -> int:
    bind = os.environ.get("SERVING_BIND", "127.0.0.1:8000").split(",")[0]
    address_file = os.environ.get("SERVING_ADDRESS_FILE")
    if address_file and os.path.exists(address_file):
        with open(address_file) as handle:
            bind = handle.read().strip() or bind
    port = bind.rsplit(":", 1)[-1]
    # The server's own settings decide how it is asked: HTTPS when it serves TLS (its own
    # certificate, so not verified: this is loopback), and a Host it answers when it has an
    # allow-list (any other gets a 421).
    tls = bool(os.environ.get("SERVING_TLS_CERT"))
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/health/ready"
    request = urllib.request.Request(url)
    allowed = [h.strip() for h in os.environ.get("SERVING_ALLOWED_HOSTS", "").split(",")]
    if any(allowed):
        request.add_header("Host", next(h for h in allowed if h))
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    timeout = float(os.environ.get("HEALTHCHECK_TIMEOUT", "3"))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context):
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.read()[:200].decode(errors='replace')}", file=sys.stderr)
    except (OSError, http.client.HTTPException) as exc:
        print(f"{url}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
