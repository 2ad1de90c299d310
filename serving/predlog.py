"""The prediction log and the feedback log: JSON Lines written off the request path.

A request appends its record to a bounded in-memory list (no lock, no wake-up: one list
append under the GIL) and a writer thread in the same process wakes every ``FLUSH_SECONDS``,
takes the whole list, formats it and appends the lines in one ``write``. Waking a thread per
request (a ``queue.Queue``) cost a quarter of one-row throughput in GIL hand-offs; this costs
the formatting alone. When the list holds ``queue_size`` records a new one is dropped and
counted (``serving_prediction_log_rows_total{outcome="dropped"}``): a slow disk costs log lines,
never latency. All workers append to the same file (``O_APPEND``, one
``write`` per batch of whole lines); when it grows past its size limit, the first writer to
notice rotates it under an ``flock``: ``<file>`` -> ``<file>.1`` -> ``<file>.2`` ... (newest
first), keeping ``backups`` old files. Others notice the new inode and reopen.

Format (one line per predicted row; shared with monitoring, see the README)::

    {"ts": "2026-12-01T09:00:00.123456Z", "request_id": "...", "row": 0,
     "model": {"name": "...", "version": "..."}, "variant": "champion", "served": true,
     "inputs": {"<column>": value-or-null, ...},
     "output": {"label": "...", "probabilities": {...}} | {"value": 3.14},
     "latency_ms": 1.23}
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson

log = logging.getLogger("serving.predlog")

#: How often the writer thread takes what requests left for it (lines reach the file within
#: about this long).
FLUSH_SECONDS = 0.2
#: Records formatted between two writes.
_SLICE = 64


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def timestamp(epoch: float) -> str:
    """``2026-12-01T09:00:00.123456Z`` (the date and time formatted once per second)."""
    second = int(epoch)
    if _second[0] != second:
        _second[1] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = second
    micro = min(int((epoch - second) * 1_000_000), 999_999)
    return f"{_second[1]}.{micro:06d}Z"


class Prediction(NamedTuple):
    """What one request hands to the prediction log: formatted later, by the writer (a
    named tuple: built on the request path, so it must be cheap to make)."""

    epoch: float
    request_id: str
    model: dict[str, str]
    variant: str
    served: bool
    #: (column name, graph input name, numeric?) of each input, and the request's feed.
    columns: tuple[tuple[str, str, bool], ...]
    feed: dict[str, np.ndarray]
    outputs: list[dict[str, Any]]
    latency_ms: float

    @property
    def rows(self) -> int:
        return len(self.outputs)

    def lines(self) -> Iterable[bytes]:
        # The parts every row of the record shares are serialised once, then each line is a
        # join of bytes (a third cheaper than one dict per line through orjson).
        head = b'{"ts":"%s","request_id":%s,"row":' % (
            timestamp(self.epoch).encode(),
            orjson.dumps(self.request_id),
        )
        middle = _shared_part(self.model, self.variant, self.served)
        tail = b',"latency_ms":%s}' % orjson.dumps(round(self.latency_ms, 3))
        feed = self.feed
        if len(self.outputs) == 1:  # the common case: no per-column lists
            inputs = {}
            for name, onnx_name, numeric in self.columns:
                value = feed[onnx_name].item(0)
                inputs[name] = (None if value != value else value) if numeric else (value or None)
            yield b"".join(
                (head, b"0", middle, orjson.dumps(inputs), b',"output":',
                 orjson.dumps(self.outputs[0]), tail)
            )  # fmt: skip
            return
        # Many rows: each column serialised once (a list of numbers has no comma inside a
        # value, so its JSON splits into the values; a text column has few distinct values,
        # each serialised once), then each row's inputs object is a join of those parts.
        n = len(self.outputs)
        parts: list[list[bytes]] = []
        for index, (name, onnx_name, numeric) in enumerate(self.columns):
            key = orjson.dumps(name)
            parts.append([b"{" + key + b":" if index == 0 else b"," + key + b":"] * n)
            values = feed[onnx_name].ravel().tolist()
            if numeric:  # orjson writes NaN as null
                parts.append(orjson.dumps(values)[1:-1].split(b","))
            else:
                known: dict[Any, bytes] = {}
                encoded = []
                for value in values:
                    text = known.get(value)
                    if text is None:
                        text = known[value] = orjson.dumps(value or None)  # "" -> null
                    encoded.append(text)
                parts.append(encoded)
        outputs = [orjson.dumps(output) for output in self.outputs]
        middle += b"%s"
        for i, row in enumerate(zip(*parts, strict=True)):
            yield b"".join(
                (head, str(i).encode(), middle % b"".join(row), b'},"output":', outputs[i], tail)
            )


_SHARED: dict[tuple[str, str, str, bool], bytes] = {}


def _shared_part(model: dict[str, str], variant: str, served: bool) -> bytes:
    """``,"model":{...},"variant":"...","served":...,"inputs":`` for this model and variant."""
    key = (model.get("name", ""), model.get("version", ""), variant, served)
    part = _SHARED.get(key)
    if part is None:
        if len(_SHARED) > 64:  # versions come and go with reloads
            _SHARED.clear()
        part = b',"model":%s,"variant":%s,"served":%s,"inputs":' % (
            orjson.dumps(model),
            orjson.dumps(variant),
            b"true" if served else b"false",
        )
        _SHARED[key] = part
    return part


#: Line breaks to Python's ``str.splitlines`` (and to some log shippers) that JSON leaves raw:
#: a client's U+2028 in a path or a category would split one record into two lines.
_RAW_BREAKS = (
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
    (b"\xc2\x85", b"\\u0085"),
)


def escape_breaks(data: bytes) -> bytes:
    """``data`` (JSON) with the line breaks JSON leaves unescaped written as escapes."""
    if data.isascii():
        return data
    for raw, escaped in _RAW_BREAKS:
        data = data.replace(raw, escaped)
    return data


class JsonLinesWriter:
    """A bounded queue, a writer thread and a size-rotated file shared by processes."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        backups: int,
        queue_size: int,
        on_count: Callable[[str, int], None] | None = None,
    ):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.queue_size = queue_size
        self._pending: list[Any] = []
        self.on_count = on_count or (lambda outcome, n: None)
        self._fd: int | None = None
        self._inode: int | None = None
        self._check_end = True
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._start_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()

    # ------------------------------------------------------------------ request side
    def room(self) -> int:
        """How many more records the queue takes now."""
        return self.queue_size - len(self._pending)

    def submit(self, record: Any) -> bool:
        """Queue ``record`` (something with ``lines()``, or bytes); False when dropped."""
        if self._pid != os.getpid():
            self._start()
        pending = self._pending
        if len(pending) >= self.queue_size:
            self.on_count("dropped", getattr(record, "rows", 1))
            return False
        pending.append(record)
        return True

    # ------------------------------------------------------------------ writer side
    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._fd = None  # a forked child must not share its parent's descriptor
            self._pending = []  # nor write its parent's records
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            with self._flush_lock:
                self._drain()

    def _take(self) -> list[Any]:
        # Rebinding is atomic; a request appending between the two steps appends to the list
        # taken here, which is written below, so nothing is lost.
        batch = self._pending
        self._pending = []
        return batch

    def _drain(self) -> None:
        batch = self._take()
        # In slices, each ended by a write (which releases the GIL): formatting a whole
        # second's records at once would hold the GIL for milliseconds, a pause every request
        # in this worker would wait out.
        for start in range(0, len(batch), _SLICE):
            self._write_batch(batch[start : start + _SLICE])

    def _write_batch(self, batch: list[Any]) -> None:
        lines = []
        for record in batch:
            try:
                lines.extend(record.lines() if hasattr(record, "lines") else [record])
            except Exception:  # a record that cannot be formatted must not stop the log
                log.exception("could not format a log record")
        if not lines:
            return
        try:
            for data in self._pieces(lines):
                self._append(data)
            self._count("written", len(lines))
        except OSError as exc:
            self._count("failed", len(lines))
            log.error("cannot write %s: %s", self.path.name, exc.strerror)

    def _count(self, outcome: str, n: int) -> None:
        # The metrics store may already be closed while the last lines are written (shutdown,
        # an app torn down in tests): a count that cannot be kept must not stop the writer.
        try:
            self.on_count(outcome, n)
        except Exception:
            log.debug("prediction log: could not count %d %s row(s)", n, outcome)

    def _pieces(self, lines: list[bytes]) -> Iterable[bytes]:
        """``lines`` as few writes as fit the file's bound: a batch of 1,000-row requests is
        megabytes, and written at once it went past ``max_bytes`` unrotated."""
        if sum(map(len, lines)) + len(lines) <= self.max_bytes:
            yield escape_breaks(b"\n".join(lines) + b"\n")
            return
        lines = [escape_breaks(line) for line in lines]
        piece: list[bytes] = []
        size = 0
        for line in lines:
            if piece and size + len(line) + 1 > self.max_bytes:
                yield b"\n".join(piece) + b"\n"
                piece, size = [], 0
            piece.append(line)
            size += len(line) + 1
        if piece:
            yield b"\n".join(piece) + b"\n"

    def _append(self, data: bytes) -> None:
        fd = self._open()
        size = os.fstat(fd).st_size
        if size and size + len(data) > self.max_bytes:
            self._rotate(self.max_bytes - len(data))
            fd = self._open()
            size = os.fstat(fd).st_size
        if self._check_end and size and os.pread(fd, 1, size - 1) != b"\n":
            # The file ends in a torn line (a crash mid-write, a full disk): end it, so the
            # next record starts a line of its own and readers skip only the torn one.
            data = b"\n" + data
        self._check_end = False
        view = memoryview(data)
        try:
            while view:  # a short write (a disk filling up) writes the rest next
                view = view[os.write(fd, view) :]
        except OSError:
            self._check_end = True
            raise

    def _open(self) -> int:
        if self._fd is not None:
            try:
                if os.stat(self.path).st_ino == self._inode:
                    return self._fd
            except FileNotFoundError:
                pass
            os.close(self._fd)  # rotated by another process: follow the new file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._inode = os.fstat(self._fd).st_ino
        self._check_end = True
        return self._fd

    def _rotate(self, threshold: int) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:  # someone else may have rotated while we waited
                if os.stat(self.path).st_size <= max(threshold, 0):
                    return
            except FileNotFoundError:
                return
            for n in range(self.backups, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if n == self.backups:
                    older.unlink(missing_ok=True)
                newer = self.path.with_name(f"{self.path.name}.{n - 1}") if n > 1 else self.path
                if newer.exists():
                    os.replace(newer, older)
            if self.backups == 0:
                self.path.unlink(missing_ok=True)
        finally:
            os.close(lock)

    def flush(self) -> None:
        """Write what is waiting now (tests, shutdown)."""
        with self._flush_lock:
            self._drain()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class PredictionLog:
    """Sampling and a rate limit in front of a :class:`JsonLinesWriter` for predictions.

    ``sample`` is the fraction of requests logged. ``rate_limit`` caps the rows a worker logs
    per second with a token bucket holding one second's worth: below it every sampled row
    is logged, above it requests are logged while tokens last (a request takes as many as it
    has rows) and the rest are counted as ``rate_limited``. Logging every row cost 6-15% of
    one-row throughput at full load on 2 cores (BENCHMARKS.md); the limit bounds that cost
    and the disk a busy server fills, and leaves small traffic logged in full."""

    def __init__(self, writer: JsonLinesWriter, sample: float, rate_limit: float = 0.0,
                 on_count=None):  # fmt: skip
        self.writer = writer
        self.sample = sample
        self.rate_limit = rate_limit
        self._burst = max(rate_limit, 1.0)  # one second's worth, at least one row
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self._random = random.Random()
        self.on_count = on_count or (lambda outcome, n: None)

    def wants(self, rows: int = 1) -> bool:
        """Whether this request is logged (decided per request, so all rows of a request are
        logged together and feedback can join any of them)."""
        if self.sample < 1.0 and self._random.random() >= self.sample:
            return False
        rate = self.rate_limit
        if not rate:
            return True
        now = time.monotonic()
        tokens = min(self._burst, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if tokens < 1:
            self._tokens = tokens
            self.on_count("rate_limited", rows)
            return False
        self._tokens = tokens - rows  # a big request may overdraw; later ones wait it out
        return True

    def submit(self, prediction: Prediction) -> bool:
        return self.writer.submit(prediction)
