"""gunicorn settings for the prediction server.

    gunicorn -c serving/gunicorn.conf.py 'serving.app:create_app()'

Every setting has an environment override (below); the app itself reads ``SERVING_*``
(see ``serving/config.py``). Defaults are for this workload: short CPU-bound requests.

- ``sync`` workers, one per CPU this process may use (affinity and cgroup quota): inference
  holds the GIL, so threads add switching, not throughput. Measured in BENCHMARKS.md against
  ``gthread`` (keep-alive): sync had the better tail latency at the same throughput.
- ONNX Runtime gets exactly one intra-op and one inter-op thread per worker
  (``SERVING_ORT_*_THREADS``), so workers x threads never oversubscribe the CPUs.
- Workers are recycled after ``max_requests`` (+ jitter so they do not all restart at once);
  metrics survive recycling (``serving/metrics.py``).
- Binds 127.0.0.1 unless ``SERVING_BIND`` says otherwise (the image sets ``0.0.0.0:8000``).
- Access log: one JSON object per line on stdout (``SERVING_ACCESS_LOG``: a path, ``-`` for
  stdout, empty to turn it off).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile

from serving.server import usable_cpus  # one definition for both stacks


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


bind = os.environ.get("SERVING_BIND", "127.0.0.1:8000").split(",")
workers = _env_int("SERVING_WORKERS", usable_cpus())
worker_class = os.environ.get("SERVING_WORKER_CLASS", "sync")
threads = _env_int("SERVING_THREADS", 1)
backlog = _env_int("SERVING_BACKLOG", 2048)

# Timeouts and graceful shutdown: a request takes milliseconds; a worker silent for `timeout`
# seconds is killed; on SIGTERM workers get `graceful_timeout` to finish what they hold
# (below Docker's default 10 s stop timeout).
timeout = _env_int("SERVING_TIMEOUT", 30)
graceful_timeout = _env_int("SERVING_GRACEFUL_TIMEOUT", 8)
keepalive = _env_int("SERVING_KEEPALIVE", 5)  # used by gthread only; sync closes each request

max_requests = _env_int("SERVING_MAX_REQUESTS", 100_000)
max_requests_jitter = _env_int("SERVING_MAX_REQUESTS_JITTER", max(1, max_requests // 10))

# Requests are small; refuse silly request lines and header blocks early.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190

accesslog = os.environ.get("SERVING_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("SERVING_LOG_LEVEL", "info")
logger_class = "serving.accesslog.JsonLinesLogger"
proc_name = "serving"
# Heartbeat files on tmpfs when there is one (a container's overlay root can be slow).
worker_tmp_dir = (
    "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
)
# gunicorn 26's control socket (gunicornc) is not used here; without this it needs a
# writable $HOME/.gunicorn. SERVING_CONTROL_SOCKET=1 turns it back on.
control_socket_disable = os.environ.get("SERVING_CONTROL_SOCKET", "") != "1"

# The model loads in each worker (create_app runs after fork). Nothing heavy is imported in
# the master: a process forked after `import onnxruntime` hangs or aborts when it exits,
# which would break every max_requests recycle.
preload_app = False
os.environ.setdefault("SERVING_ORT_INTRA_OP_THREADS", "1")
os.environ.setdefault("SERVING_ORT_INTER_OP_THREADS", "1")

_owned_runtime_dir: str | None = None
_publisher = None


def on_starting(server) -> None:
    """Create the server's runtime dir; in registry mode, publish the first model version."""
    global _owned_runtime_dir, _publisher
    # The app's own loggers write where gunicorn's error log does (workers inherit this).
    app_log = logging.getLogger("serving")
    app_log.handlers = list(server.log.error_log.handlers)
    app_log.setLevel(server.log.error_log.level)
    app_log.propagate = False

    if not os.environ.get("SERVING_RUNTIME_DIR"):
        _owned_runtime_dir = tempfile.mkdtemp(prefix="serving-")
        os.environ["SERVING_RUNTIME_DIR"] = _owned_runtime_dir
    if not os.environ.get("SERVING_MODEL_URI"):
        return

    from serving.config import PUBLISHED_ENV, ConfigError, ServingConfig
    from serving.publisher import Publisher

    try:
        config = ServingConfig.from_env()
    except ConfigError as exc:
        server.log.error("configuration error: %s", exc)
        sys.exit(1)
    os.environ[PUBLISHED_ENV] = "1"
    _publisher = Publisher(config, config.runtime_dir)
    if not _publisher.publish_first() and config.reload_interval <= 0:
        server.log.error("no model from %s and reloading is off: exiting", config.model_uri)
        sys.exit(1)


def when_ready(server) -> None:
    if _publisher is not None:
        _publisher.start()
    addresses = [
        "%s:%s" % listener.sock.getsockname()[:2]  # noqa: UP031 (IPv4 and IPv6 tuples)
        for listener in server.LISTENERS
        if listener.sock.family in (socket.AF_INET, socket.AF_INET6)
    ]
    # Where the image's HEALTHCHECK (serving/healthcheck.py) finds the port actually bound.
    if os.environ.get("SERVING_ADDRESS_FILE") and addresses:
        with open(os.environ["SERVING_ADDRESS_FILE"], "w") as handle:
            handle.write(addresses[0] + "\n")
    server.log.info(
        "serving on %s with %d %s worker(s)", ",".join(addresses), workers, worker_class
    )


def on_exit(server) -> None:
    if _publisher is not None:
        _publisher.stop()
    if _owned_runtime_dir:
        shutil.rmtree(_owned_runtime_dir, ignore_errors=True)
