"""Small load clients for the serving benchmarks and tests: keep-alive callers that count
what happened to every request, slow clients, and a drain (SIGTERM) probe. Standard library."""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Tally:
    """Outcomes of requests: ``ok`` (2xx), ``status`` (other codes), ``refused`` (connection
    refused before anything was sent: the server had stopped listening) and ``reset`` (sent,
    no response: the failure a graceful shutdown must not cause)."""

    ok: int = 0
    refused: int = 0
    reset: int = 0
    status: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, other: Tally) -> None:
        with self.lock:
            self.ok += other.ok
            self.refused += other.refused
            self.reset += other.reset
            self.status.update(other.status)
            self.latencies.extend(other.latencies)

    def p(self, q: float) -> float:
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))] * 1000 if data else float("nan")


def caller(
    host: str,
    port: int,
    body: bytes,
    headers: dict[str, str],
    stop: threading.Event,
    tally: Tally,
    *,
    until_refused: bool = False,
    path: str = "/predict",
    timeout: float = 10.0,
    stop_on_close: bool = False,
) -> None:
    """One keep-alive connection posting ``body`` until ``stop`` (or until the server refuses
    connections, with ``until_refused``; or until it answers ``Connection: close``, with
    ``stop_on_close``: a load balancer taking a draining server out of rotation)."""
    mine = Tally()
    conn = None
    while not stop.is_set():
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                conn.connect()
            except ConnectionRefusedError:
                mine.refused += 1
                conn = None
                if until_refused:
                    break
                time.sleep(0.05)
                continue
            except OSError:
                mine.refused += 1
                conn = None
                if until_refused:
                    break
                continue
        started = time.perf_counter()
        try:
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            mine.reset += 1
            conn.close()
            conn = None
            continue
        mine.latencies.append(time.perf_counter() - started)
        if 200 <= response.status < 300:
            mine.ok += 1
        else:
            mine.status[response.status] += 1
        if response.will_close:
            conn.close()
            conn = None
            if stop_on_close:
                break
    if conn is not None:
        conn.close()
    tally.add(mine)


def run_callers(n: int, target, *args, **kwargs) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=target, args=args, kwargs=kwargs, daemon=True) for _ in range(n)
    ]
    for thread in threads:
        thread.start()
    return threads


class SlowClients:
    """``n`` connections that send a request's headers (``mode="headers"``) or its body
    (``mode="body"``) one byte per ``interval`` seconds, reconnecting one interval after the
    server answers or closes them. Counts how the server ended each (``closed``) and what it
    answered (``answers``)."""

    def __init__(
        self,
        host: str,
        port: int,
        n: int,
        mode: str,
        token: str | None = None,
        interval: float = 1.0,
    ):
        self.host, self.port, self.n, self.mode = host, port, n, mode
        self.token, self.interval = token, interval
        self.stop = threading.Event()
        self.answers: Counter = Counter()
        self.closed = 0
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def _request(self) -> tuple[bytes, bytes]:
        auth = f"Authorization: Bearer {self.token}\r\n" if self.token else ""
        body = b'{"instances": [{"island": "Biscoe"}]}'
        head = (
            f"POST /predict HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        return head, body

    def _one(self) -> None:
        head, body = self._request()
        while not self.stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=30)
            except OSError:
                time.sleep(0.2)
                continue
            sock.setblocking(True)
            sock.settimeout(self.interval + 30)
            try:
                if self.mode == "headers":
                    fast, slow = b"", head + body
                else:
                    fast, slow = head, body
                if fast:
                    sock.sendall(fast)
                answer = b""
                for i in range(len(slow)):
                    # Wait one interval, watching for the server answering or closing early.
                    readable, _, _ = select.select([sock], [], [], self.interval)
                    if readable or self.stop.is_set():
                        break
                    sock.sendall(slow[i : i + 1])
                if self.stop.is_set():
                    return
                answer = sock.recv(64)
                with self.lock:
                    self.answers[answer[9:12].decode(errors="replace") or "closed"] += 1
            except OSError:
                with self.lock:
                    self.closed += 1
            finally:
                sock.close()
            # A slow client's pace also when the server answers at once (a 401 before the
            # body): one new connection per interval, not a flood of fast requests.
            self.stop.wait(self.interval)

    def start(self) -> SlowClients:
        self.threads = [threading.Thread(target=self._one, daemon=True) for _ in range(self.n)]
        for thread in self.threads:
            thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)
