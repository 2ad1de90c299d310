"""Prometheus metrics shared by the processes of one server, at the cost of a few stores.

Each process claims a *slot* in a directory shared by the server (``SERVING_RUNTIME_DIR``):
``slot-N.lock`` (held with ``flock`` while the process lives), ``slot-N.bin`` (an mmap'd
array of float64 values) and ``slot-N.json`` (the name of each value, append-only). Counting
is an add into the mmap, with no file or system call per request. ``/metrics`` in any worker
reads every slot and sums them.

A process that starts after another died (a worker killed and respawned, or restarted by SIGHUP or
``SERVING_WORKERS_LIFETIME``) adopts the dead slot and keeps counting from its values, so counters
stay monotonic and the number of files stays at the number of processes alive at once, unlike
``prometheus_client``'s multiprocess mode, which leaves files per pid behind. Gauges are summed
over live slots only (a slot is live while its lock is held).
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import logging
import mmap
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

log = logging.getLogger("serving.metrics")

#: Latency histogram upper bounds, in seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_NB = len(BUCKETS) + 1  # + the +Inf bucket
#: Predicted values of a regression model: symmetric 1-2.5-5 steps from 0.001 to 5e6, so one
#: set of bounds fits any target's scale. (prometheus_client leaves out ``_sum`` and ``_count``
#: of a histogram with negative bounds; the ``+Inf`` bucket is the count.)
_STEPS = [m * 10.0**e for e in range(-3, 7) for m in (1.0, 2.5, 5.0)]
VALUE_BUCKETS = (*[-b for b in reversed(_STEPS)], 0.0, *_STEPS)

REQUESTS = "serving_requests"
LATENCY = "serving_request_duration_seconds"
PREDICTIONS = "serving_predictions"
MODEL_INFO = "serving_model_info"
RELOADS = "serving_model_reloads"
RELOAD_FAILURES = "serving_model_reload_failures"
READY = "serving_ready_workers"
PREDICTION_VALUE = "serving_prediction_value"
PREDICTION_LOG = "serving_prediction_log_rows"
FEEDBACK = "serving_feedback_rows"
SHADOW_FAILURES = "serving_shadow_failures"
CANARY_FALLBACKS = "serving_canary_fallbacks"

#: name -> (type, help). Label names are given where each series is created.
FAMILIES = {
    REQUESTS: ("counter", "HTTP requests by endpoint and status code."),
    LATENCY: ("histogram", "Time from receiving a request to returning its response."),
    PREDICTIONS: ("counter", "Predicted rows by predicted class and variant."),
    PREDICTION_VALUE: ("histogram", "Predicted values of a regression model, by variant."),
    PREDICTION_LOG: (
        "counter",
        "Prediction log rows: written, dropped (queue full), failed, rate_limited (not logged).",
    ),
    FEEDBACK: ("counter", "Feedback rows: written, dropped (queue full), failed."),
    SHADOW_FAILURES: ("counter", "Requests the shadow challenger could not score."),
    CANARY_FALLBACKS: (
        "counter",
        "Canary requests the challenger refused and the champion answered (its rules are the API).",
    ),
    MODEL_INFO: ("gauge", "Processes serving each model version (name, version, source, variant)."),
    RELOADS: ("counter", "Model versions swapped in by a reload, by variant."),
    RELOAD_FAILURES: (
        "counter",
        "Load and reload attempts that failed (a reload keeps the old model), by step and variant.",
    ),
    READY: ("gauge", "Worker processes with a loaded, golden-checked model."),
}
_CAPACITY = 4096
#: Histogram bounds by family (the request latency histogram's unless listed).
_FAMILY_BUCKETS = {PREDICTION_VALUE: VALUE_BUCKETS}


def histogram_width(family: str) -> int:
    """Values a histogram series takes: one per bucket (+Inf included), the sum, the count."""
    return len(_FAMILY_BUCKETS.get(family, BUCKETS)) + 3


def _key(family: str, labels: tuple[tuple[str, str], ...]) -> str:
    return json.dumps([family, [list(pair) for pair in labels]], separators=(",", ":"))


class MetricsStore:
    """This process's slot, plus the reader that sums all slots at scrape time."""

    def __init__(self, directory: Path, capacity: int = _CAPACITY):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.slot, self._lock_fd = self._claim_slot()
        base = self.directory / f"slot-{self.slot}"
        self._names_path = base.with_suffix(".json")
        fd = os.open(base.with_suffix(".bin"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < capacity * 8:
                os.ftruncate(fd, capacity * 8)
            self._mmap = mmap.mmap(fd, capacity * 8)
        finally:
            os.close(fd)
        self._values = memoryview(self._mmap).cast("d")
        self._names: list[str] = self._read_names(self._names_path)
        self._index = {name: i for i, name in enumerate(self._names)}
        # An adopted slot's gauges described the dead process, not this one.
        for i, name in enumerate(self._names):
            if name and FAMILIES.get(json.loads(name)[0], ("",))[0] == "gauge":
                self._values[i] = 0.0
        self._requests: dict[tuple[str, int], int] = {}
        self._latency: dict[str, int] = {}
        self._overflowed = False

    # ------------------------------------------------------------------ slots
    def _claim_slot(self) -> tuple[int, int]:
        slot = 0
        while True:
            path = self.directory / f"slot-{slot}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                slot += 1
                continue
            return slot, fd

    @staticmethod
    def _read_names(path: Path) -> list[str]:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return []

    def index(self, family: str, labels: Iterable[tuple[str, str]] = (), width: int = 1) -> int:
        """The value index of a series (allocating ``width`` consecutive values if new)."""
        labels = tuple((str(k), str(v)) for k, v in labels)
        key = _key(family, labels)
        with self._lock:
            found = self._index.get(key)
            if found is not None:
                return found
            start = len(self._names)
            if start + width > self.capacity - 1:
                if not self._overflowed:
                    log.error("metrics slot is full (%d values): new series dropped", self.capacity)
                    self._overflowed = True
                return self.capacity - 1  # a sink nobody reads
            self._names.append(key)
            self._names.extend([""] * (width - 1))  # the rest of a histogram's values
            self._index[key] = start
            tmp = self._names_path.with_name(f".{self._names_path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(self._names))
            os.replace(tmp, self._names_path)
            return start

    # ------------------------------------------------------------------ writing
    def inc(self, index: int, amount: float = 1.0) -> None:
        with self._lock:
            self._values[index] += amount

    def set(self, index: int, value: float) -> None:
        self._values[index] = value

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one request and its latency (the per-request hot path)."""
        counter = self._requests.get((endpoint, status))
        if counter is None:
            counter = self._requests[(endpoint, status)] = self.index(
                REQUESTS, (("endpoint", endpoint), ("status", str(status)))
            )
        base = self._latency.get(endpoint)
        if base is None:
            base = self._latency[endpoint] = self.index(
                LATENCY, (("endpoint", endpoint),), width=_NB + 2
            )
        values = self._values
        with self._lock:
            values[counter] += 1.0
            values[base + bisect.bisect_left(BUCKETS, seconds)] += 1.0
            values[base + _NB] += seconds
            values[base + _NB + 1] += 1.0

    def observe_values(self, base: int, values: list[float]) -> None:
        """Regression outputs into the ``serving_prediction_value`` series at ``base``."""
        n = len(VALUE_BUCKETS) + 1
        slots = self._values
        with self._lock:
            for value in values:
                slots[base + bisect.bisect_left(VALUE_BUCKETS, value)] += 1.0
                slots[base + n] += value
                slots[base + n + 1] += 1.0

    def count_classes(self, indexes: dict[str, int], labels: list[str]) -> None:
        values = self._values
        with self._lock:
            for label in labels:
                index = indexes.get(label)
                if index is not None:
                    values[index] += 1.0

    # ------------------------------------------------------------------ reading
    def _slots(self) -> list[tuple[list[str], memoryview, bool]]:
        out = []
        for names_path in sorted(self.directory.glob("slot-*.json")):
            slot = names_path.stem.split("-", 1)[1]
            names = self._read_names(names_path)
            try:
                data = (self.directory / f"slot-{slot}.bin").read_bytes()
            except OSError:
                continue
            values = memoryview(data).cast("d")
            live = slot == str(self.slot) or self._is_live(self.directory / f"slot-{slot}.lock")
            out.append((names, values, live))
        return out

    @staticmethod
    def _is_live(lock_path: Path) -> bool:
        try:
            fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def totals(self) -> dict[str, float]:
        """Every series summed over slots (gauges over live slots only), keyed by series key."""
        totals: dict[str, float] = {}
        for names, values, live in self._slots():
            for i, name in enumerate(names[: len(values)]):
                if not name:
                    continue
                family = json.loads(name)[0]
                kind = FAMILIES.get(family, ("counter",))[0]
                if kind == "gauge" and not live:
                    continue
                if kind == "histogram":
                    block = values[i : i + histogram_width(family)].tolist()
                    prior = totals.get(name)
                    totals[name] = (
                        block
                        if prior is None
                        else [a + b for a, b in zip(prior, block, strict=True)]
                    )  # type: ignore[assignment]
                else:
                    totals[name] = totals.get(name, 0.0) + values[i]
        return totals

    def collect(self):
        """prometheus_client collector protocol: the summed families."""
        families: dict[str, object] = {}
        for key, value in sorted(self.totals().items()):
            family, labels = json.loads(key)
            kind, help_text = FAMILIES.get(family, ("counter", family))
            names = [k for k, _ in labels]
            label_values = [v for _, v in labels]
            metric = families.get(family)
            if kind == "histogram":
                if metric is None:
                    metric = families[family] = HistogramMetricFamily(
                        family, help_text, labels=names
                    )
                bounds = (*_FAMILY_BUCKETS.get(family, BUCKETS), float("inf"))
                cumulative, running = [], 0.0
                for bound, count in zip(bounds, value[: len(bounds)], strict=True):
                    running += count
                    cumulative.append((_bound(bound), running))
                metric.add_metric(label_values, cumulative, sum_value=value[len(bounds)])
            elif kind == "gauge":
                if metric is None:
                    metric = families[family] = GaugeMetricFamily(family, help_text, labels=names)
                metric.add_metric(label_values, value)
            else:
                if metric is None:
                    metric = families[family] = CounterMetricFamily(family, help_text, labels=names)
                metric.add_metric(label_values, value)
        # Families with no samples yet still announce themselves (dashboards, alerts).
        for family, (kind, help_text) in FAMILIES.items():
            if family not in families and kind != "histogram":
                cls = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
                families[family] = cls(family, help_text, labels=[])
        yield from families.values()

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self._values.release()
            self._mmap.close()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


def render(store: MetricsStore) -> bytes:
    """The Prometheus text exposition of ``store``'s totals."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(store))
    return generate_latest(registry)


class _Collector:
    def __init__(self, store: MetricsStore):
        self._store = store

    def collect(self):
        return self._store.collect()
