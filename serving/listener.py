"""Closing the door before granian closes its listeners, so no accepted connection is reset.

granian's workers each listen on the server's address with ``SO_REUSEPORT``. When a listener
closes, the connections the kernel had already accepted for it (its accept queue, and
handshakes under way) are reset: a client that had just connected sees its request fail
although the server was still up a moment before. Load balancers stop sending when readiness
turns 503, but a client that connects directly keeps connecting until it is refused.

Before granian is told to stop, the launcher joins the same ``SO_REUSEPORT`` group with a
socket of its own that drops every packet it is given (a classic BPF socket filter), and
attaches a reuseport program to the group that hands every new connection to that socket.
From then on a new client's SYN is dropped: its kernel retries after one second (then
after two and four more), and once every listener is gone the retry is refused, which tells
the client to go elsewhere. The workers finish the connections they hold; their queues,
watched through the kernel's socket diagnostics, are empty before the stop. Linux only, best
effort: where any step is refused, the server stops as before.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
import time

#: ``<asm-generic/socket.h>``
SO_ATTACH_FILTER = 26
SO_ATTACH_REUSEPORT_CBPF = 51
#: ``BPF_RET | BPF_K``: a program of one instruction that returns a constant.
BPF_RET_K = 0x06
#: ``<linux/tcp_states.h>``
SYN_RECV, LISTEN = 3, 10
#: ``<linux/sock_diag.h>``, ``<linux/netlink.h>``
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
NLM_F_REQUEST, NLM_F_DUMP, NLMSG_ERROR, NLMSG_DONE = 0x1, 0x300, 2, 3


def family_of(host: str) -> socket.AddressFamily:
    """The socket family of an IP address: ``AF_INET6`` for IPv6, else ``AF_INET``."""
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def _attach(sock: socket.socket, option: int, value: int) -> None:
    """Attach the one-instruction classic BPF program ``ret #value`` with ``option``."""
    program = ctypes.create_string_buffer(struct.pack("=HBBI", BPF_RET_K, 0, 0, value))
    fprog = struct.pack("HL", 1, ctypes.addressof(program))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, option, fprog)


def sockets_at(host: str, port: int) -> list[tuple[int, int]]:
    """``(state, accept queue)`` of the listeners (``LISTEN``) and handshakes under way
    (``SYN_RECV``) on ``host:port`` in this network namespace, from the kernel's socket
    diagnostics (what ``ss -lnt`` reads; unprivileged). The kernel leaves out every other
    state, so thousands of TIME_WAIT connections cost nothing here."""
    packed = ipaddress.ip_address(host).packed
    request = struct.pack(
        "=BBBxI48x", family_of(host), socket.IPPROTO_TCP, 0, (1 << LISTEN) | (1 << SYN_RECV)
    )
    header = struct.pack(
        "=IHHII", 16 + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
    )
    found = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as diag:
        diag.sendall(header + request)
        while True:
            data = diag.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR or length < 16:
                    raise OSError("socket diagnostics refused the dump")
                # struct inet_diag_msg: family, state, timer, retrans, then the socket id
                # (source port, destination port, source address, ...), then rqueue.
                state = data[offset + 17]
                sport = struct.unpack_from("!H", data, offset + 20)[0]
                source = data[offset + 24 : offset + 24 + len(packed)]
                rqueue = struct.unpack_from("=I", data, offset + 16 + 56)[0]
                if sport == port and source == packed:
                    found.append((state, rqueue))
                offset += (length + 3) & ~3


class Door:
    """The launcher's socket in granian's reuseport group, taking every new connection and
    dropping it. ``close()`` opens the way for refusals once granian is gone."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.sock: socket.socket | None = None
        #: Why the door could not be shut, when a listener was there to shut it for.
        self.refused: str | None = None

    def shut(self, settle: float = 1.0) -> bool:
        """Steer new connections to the dropping socket, then wait (at most ``settle``
        seconds) until the workers' accept queues and pending handshakes are empty. False
        when this kernel or these sockets do not allow it (the stop goes on as before)."""
        try:
            listeners = sum(1 for state, _ in sockets_at(self.host, self.port) if state == LISTEN)
            if not listeners:
                return False
            sock = socket.socket(family_of(self.host), socket.SOCK_STREAM)
            self.sock = sock
            _attach(sock, SO_ATTACH_FILTER, 0)  # every packet dropped, before it can listen
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, self.port))
            sock.listen(1)
            # Joined last, so its index in the group is the number of listeners before it.
            _attach(sock, SO_ATTACH_REUSEPORT_CBPF, listeners)
        except OSError as exc:
            self.refused = exc.strerror or str(exc)
            self.close()
            return False
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            try:
                pending = any(
                    state == SYN_RECV or (state == LISTEN and queued)
                    for state, queued in sockets_at(self.host, self.port)
                )
            except OSError:
                break
            if not pending:
                break
            time.sleep(0.001)
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
