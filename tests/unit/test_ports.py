"""pipeline.ports.free_port: ports picked for several servers before any of them binds."""

from __future__ import annotations

import socket

from pipeline.ports import free_port


def test_ports_picked_back_to_back_never_repeat():
    # The kernel hands bind(port 0) its numbers from a range of about 14,000 odd ports, so
    # 3,000 closed probes repeat a number many times over (the birthday bound); two servers
    # given one port is how the monitoring stack's gunicorn peer died with EADDRINUSE.
    ports = [free_port() for _ in range(3000)]
    assert len(set(ports)) == len(ports)


def test_a_port_handed_out_is_free_to_bind():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert sock.getsockname() == ("127.0.0.1", port)
