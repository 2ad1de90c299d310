"""The image's HEALTHCHECK: exit 0 when this container's server is ready.

    python -m serving.healthcheck

Asks ``/health/ready`` over loopback on the port the server wrote to ``SERVING_ADDRESS_FILE``
when it started (so a ``SERVING_BIND`` given at ``run`` time is honoured even where the check
runs without that variable), else on the port of ``SERVING_BIND``. Standard library only: the
image has no curl.
"""

from __future__ import annotations

import os
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
    url = f"http://127.0.0.1:{port}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT", "3"))):
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.read()[:200].decode(errors='replace')}", file=sys.stderr)
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
