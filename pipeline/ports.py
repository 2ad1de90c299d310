"""Free TCP ports for servers this process is about to start.

A port is found by binding port 0 and closing the socket; the server that will own it binds it
later, in another process. Between the two the kernel may hand the same number to the next
``bind(("127.0.0.1", 0))``, so a caller that picks ports for several servers before any of them
has bound (the team stack, the tests' monitoring stack) can give two servers one port, and the
slower one exits with "Address already in use". ``free_port`` never returns a port it has
already returned in this process.
"""

from __future__ import annotations

import socket

_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing on ``host`` is bound to, never one this process was already given."""
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free TCP port on {host} that was not already handed out")
