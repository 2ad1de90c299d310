"""The door the launcher shuts before granian closes its listeners (``serving/listener.py``),
on real sockets in a ``SO_REUSEPORT`` group, as granian's workers bind them."""

from __future__ import annotations

import contextlib
import socket

import pytest

from serving.listener import LISTEN, Door, sockets_at

pytestmark = pytest.mark.serving


def reuseport_group(count: int) -> tuple[list[socket.socket], int]:
    """``count`` listeners on one 127.0.0.1 port, each with ``SO_REUSEPORT``."""
    first = socket.socket()
    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    first.bind(("127.0.0.1", 0))
    port = first.getsockname()[1]
    listeners = [first]
    for _ in range(count - 1):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        listeners.append(sock)
    for sock in listeners:
        sock.listen(64)
        sock.setblocking(False)
    return listeners, port


def test_sockets_at_reports_listeners_and_their_accept_queues():
    listeners, port = reuseport_group(2)
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(6)]
    try:
        found = sockets_at("127.0.0.1", port)
        assert [state for state, _ in found] == [LISTEN, LISTEN]
        assert sum(queued for _, queued in found) == 6  # accepted by the kernel, not by us
        assert sockets_at("127.0.0.2", port) == []  # the address counts, not only the port
    finally:
        for sock in clients + listeners:
            sock.close()


def test_a_shut_door_takes_no_new_connection_and_keeps_the_queued_ones():
    listeners, port = reuseport_group(2)
    queued = socket.create_connection(("127.0.0.1", port), timeout=5)
    queued.sendall(b"before")
    door = Door("127.0.0.1", port)
    late = []
    try:
        assert door.shut(settle=0.2) is True
        # Without the door each of these would be accepted by the kernel into a listener's
        # queue, and reset when that listener closes. With it, the SYN is dropped: connect
        # waits (the kernel retries after a second), nothing is queued anywhere.
        for _ in range(10):
            sock = socket.socket()
            sock.settimeout(0.2)
            late.append(sock)
            with pytest.raises(TimeoutError):
                sock.connect(("127.0.0.1", port))
        states = sockets_at("127.0.0.1", port)
        assert len([s for s in states if s[0] == LISTEN]) == 3  # the door is one of them
        assert sum(queued for _, queued in states) == 1  # only the one from before
        # The connection queued before the door shut is still the workers' to serve.
        accepted = []
        for sock in listeners:
            with contextlib.suppress(BlockingIOError):
                accepted.append(sock.accept()[0])
        assert len(accepted) == 1
        accepted[0].settimeout(5)
        assert accepted[0].recv(16) == b"before"
        accepted[0].close()
    finally:
        for sock in late + listeners:
            sock.close()
        door.close()
        queued.close()
    # Every listener gone: a new client is refused, at once.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_no_listener_means_nothing_to_shut():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    door = Door("127.0.0.1", port)
    assert door.shut() is False
    assert door.sock is None
