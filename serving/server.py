"""The server process: ``python -m serving.server`` (what ``make serve`` and the image run).

A small launcher that owns what belongs to the server as a whole, and runs granian (the HTTP
server and its worker processes) as its child:

- the runtime directory (metrics slots, the published model pointer), created here and
  removed when the server exits, also after any number of SIGHUPs;
- with ``SERVING_MODEL_URI``, the registry watcher (``serving/publisher.py``): it resolves
  the alias, downloads, has ``python -m serving.verify`` check the version in a separate
  process and publishes it; workers follow the pointer. This process never imports ONNX
  Runtime or the app;
- signals. SIGTERM/SIGINT: the drain file is written at once, so every worker's
  ``/health/ready`` answers 503 while the server still serves, then after
  ``SERVING_DRAIN_SECONDS`` granian is told to stop, finishes what it holds and is killed
  after ``SERVING_GRACEFUL_TIMEOUT`` seconds. SIGHUP: granian restarts its workers one by one.

Every setting is a ``SERVING_*`` variable (README, "Serving"); :func:`granian_command` maps
them to granian's options.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from serving.config import DRAIN_FILE, PUBLISHED_ENV, ConfigError, ServingConfig
from serving.listener import Door, family_of
from serving.registry import CHALLENGER_PREFIX

#: Checked once, as the first thing a misconfigured server says.
_TRUE = ("1", "true", "yes", "on")
#: ``SERVING_MAX_CONNECTIONS``' default, per worker, when the open-file limit allows it.
MAX_CONNECTIONS = 10_000


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    cpus = len(os.sched_getaffinity(0))
    try:
        with open("/sys/fs/cgroup/cpu.max") as handle:
            quota, period = handle.read().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def default_max_connections() -> int:
    """Connections a worker holds at once: 10,000, or fewer when the open-file limit is lower
    (a worker needs descriptors for its model, logs and listener too)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(64, min(MAX_CONNECTIONS, soft - 64))


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}.") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}.")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}.")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}.") from None
    if not value >= 0:
        raise ConfigError(f"{name} must be 0 or more, not {raw!r}.")
    return value


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) -> ``(host, port)``."""
    host, sep, port = bind.strip().rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"SERVING_BIND must be host:port, not {bind!r}.")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:  # granian binds addresses only, and died on a name with a traceback
        raise ConfigError(
            f"SERVING_BIND's host must be an IP address (127.0.0.1, 0.0.0.0, [::1]), not {host!r}."
        ) from None
    return host, int(port)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another server listens on. granian binds with ``SO_REUSEPORT``, so a
    second server on a busy port started without a word and the kernel split the clients
    between the two (two different models on one address). A bind without that option
    fails while any socket listens there."""
    probe = socket.socket(family_of(host), socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"SERVING_BIND {host}:{port} is already in use by another server; stop it or "
                "choose another port (make serve SERVE_PORT=...)."
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(
                f"SERVING_BIND {host}:{port}: {host} is not an address of this machine."
            ) from None
        raise ConfigError(f"SERVING_BIND {host}:{port} cannot be bound: {exc.strerror}.") from None
    finally:
        probe.close()


def granian_command(env: Mapping[str, str]) -> list[str]:
    """The granian command line for these ``SERVING_*`` settings."""
    host, port = parse_bind(env.get("SERVING_BIND", "127.0.0.1:8000"))
    workers = _int(env, "SERVING_WORKERS", usable_cpus())
    header_timeout = _float(env, "SERVING_HEADER_TIMEOUT", 5.0)
    graceful = _float(env, "SERVING_GRACEFUL_TIMEOUT", 6.0)
    command = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "rsgi",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--http",
        "1",
        "--no-ws",
        "--workers",
        str(workers),
        "--runtime-threads",
        "1",
        "--loop",
        _choice(env, "SERVING_LOOP", ("uvloop", "asyncio"), "uvloop"),
        "--backlog",
        str(_int(env, "SERVING_BACKLOG", 2048, minimum=128)),
        # granian's default is backlog/workers connections per worker at once: beyond them a
        # new client waits, unanswered, until idle ones hit the header timeout.
        "--backpressure",
        str(_int(env, "SERVING_MAX_CONNECTIONS", default_max_connections())),
        "--http1-header-read-timeout",
        str(max(1, min(60_000, int(header_timeout * 1000)))),
        "--workers-kill-timeout",
        str(max(1, math.ceil(graceful))),
        "--respawn-failed-workers",
        # On SIGHUP (and SERVING_WORKERS_LIFETIME) granian starts the new worker, waits this
        # long, then stops the old one: long enough for the new worker to load its model.
        "--respawn-interval",
        str(_float(env, "SERVING_RESTART_OVERLAP", 5.0)),
        "--log-level",
        env.get("SERVING_LOG_LEVEL", "info"),
    ]
    if env.get("SERVING_KEEPALIVE", "1").strip().lower() not in _TRUE:
        command.append("--no-http1-keep-alive")
    if env.get("SERVING_WORKERS_LIFETIME"):
        command += ["--workers-lifetime", str(_int(env, "SERVING_WORKERS_LIFETIME", 0, 60))]
    if env.get("SERVING_WORKERS_MAX_RSS"):
        command += ["--workers-max-rss", str(_int(env, "SERVING_WORKERS_MAX_RSS", 0))]
    cert, key = env.get("SERVING_TLS_CERT"), env.get("SERVING_TLS_KEY")
    if bool(cert) != bool(key):
        raise ConfigError("set both SERVING_TLS_CERT and SERVING_TLS_KEY for HTTPS, or neither.")
    if env.get("SERVING_TLS_KEY_PASSWORD"):
        raise ConfigError(
            "SERVING_TLS_KEY_PASSWORD is not supported: granian 2.8.7 cannot read an encrypted "
            "key (its workers panic). Store the key unencrypted with mode 0600 (a Kubernetes "
            "secret): openssl pkey -in encrypted.pem -out key.pem"
        )
    if cert and key:
        _check_pem("SERVING_TLS_CERT", cert, "CERTIFICATE")
        _check_pem("SERVING_TLS_KEY", key, "PRIVATE KEY")
        try:  # a key of another certificate: granian's workers die on it with a traceback
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"SERVING_TLS_KEY does not go with SERVING_TLS_CERT ({exc.reason or exc})."
            ) from None
        command += [
            "--ssl-certificate",
            cert,
            "--ssl-keyfile",
            key,
            "--ssl-protocol-min",
            "tls1.2",
        ]
    command.append("serving.rsgi:create_rsgi_app")
    return command


#: granian's own logging configuration (``granian.log.LOGGING_CONFIG``) with stderr for stdout.
GRANIAN_LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "generic": {"()": "logging.Formatter", "fmt": "[%(levelname)s] %(message)s"},
        "access": {"()": "logging.Formatter", "fmt": "%(message)s"},
    },
    "handlers": {
        name: {"formatter": name, "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
        for name in ("generic", "access")
    },
    "loggers": {
        "_granian": {"handlers": ["generic"], "level": "INFO", "propagate": False},
        "granian.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}


def _check_pem(name: str, path: str, kind: str) -> None:
    """Refuse, before granian starts, a file its workers would panic on (a crash loop whose
    only message is a Rust backtrace): absent, unreadable, not PEM, or an encrypted key."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(1 << 20)
    except FileNotFoundError:
        raise ConfigError(f"{name}: no file {path!r}.") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path!r}: {exc.strerror}.") from None
    if b"ENCRYPTED" in text:
        raise ConfigError(
            f"{name}: {path!r} is an encrypted key, which granian 2.8.7 cannot read; store it "
            "unencrypted with mode 0600: openssl pkey -in encrypted.pem -out key.pem"
        )
    if not re.search(rb"-----BEGIN (?:[A-Z]+ )?" + kind.encode() + rb"-----", text):
        raise ConfigError(f"{name}: {path!r} holds no PEM {kind.lower()}.")


class Launcher:
    """Runs granian with a runtime dir, the registry publisher and the signal policy."""

    def __init__(self, env: Mapping[str, str]):
        self.env = dict(env)
        self.drain_seconds = _float(env, "SERVING_DRAIN_SECONDS", 2.0)
        self.graceful = _float(env, "SERVING_GRACEFUL_TIMEOUT", 6.0)
        self.command = granian_command(env)  # refuses a bad SERVING_BIND, among others
        self.bind = parse_bind(env.get("SERVING_BIND", "127.0.0.1:8000"))
        self.owned_runtime: Path | None = None
        if not self.env.get("SERVING_RUNTIME_DIR"):
            self.owned_runtime = Path(tempfile.mkdtemp(prefix="serving-"))
            self.env["SERVING_RUNTIME_DIR"] = str(self.owned_runtime)
        self.runtime_dir = Path(self.env["SERVING_RUNTIME_DIR"])
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        (self.runtime_dir / DRAIN_FILE).unlink(missing_ok=True)
        # granian logs to stdout by default, where the JSON access log goes: its own lines
        # go to stderr, so stdout stays one JSON object per line.
        log_config = self.runtime_dir / "granian-log.json"
        log_config.write_text(json.dumps(GRANIAN_LOG_CONFIG))
        self.command[-1:-1] = ["--log-config", str(log_config)]
        self.env.setdefault("SERVING_ORT_INTRA_OP_THREADS", "1")
        self.env.setdefault("SERVING_ORT_INTER_OP_THREADS", "1")
        try:
            self.config = ServingConfig.from_env(self.env)  # refuse bad settings before starting
            check_port_free(*self.bind)
        except ConfigError:
            if self.owned_runtime is not None:  # a refused start leaves nothing in the temp dir
                shutil.rmtree(self.owned_runtime, ignore_errors=True)
            raise
        self.publisher = None
        self.challenger = None
        self.proc: subprocess.Popen | None = None
        self._stopping = threading.Event()

    def start_publisher(self) -> bool:
        """Registry mode: publish the first version before workers start. The launcher does
        all the registry work (a champion from a directory with a challenger from the registry
        too), so workers never import MLflow."""
        challenger = self.config.challenger_source if self.config.rollout != "off" else None
        challenger_uri = challenger if isinstance(challenger, str) else None
        if self.config.model_uri is None and challenger_uri is None:
            return True
        from serving.publisher import Publisher

        self.env[PUBLISHED_ENV] = "1"
        store = None
        if challenger_uri is not None:  # a registry alias: published like the champion
            self.challenger = Publisher(
                self.config, self.runtime_dir, uri=challenger_uri, prefix=CHALLENGER_PREFIX
            )
            store = self.challenger.store
            self.challenger.publish_first()
            self.challenger.start()
        if self.config.model_uri is None:
            return True
        self.publisher = Publisher(self.config, self.runtime_dir, store=store)
        published = self.publisher.publish_first()
        if not published and self.config.reload_interval <= 0:
            print(
                f"serving: no servable model from {self.config.model_uri} and reloading is "
                "off: exiting",
                file=sys.stderr,
            )
            return False
        self.publisher.start()
        return True

    def run(self) -> int:
        try:
            if not self.start_publisher():
                return 1
            signal.signal(signal.SIGTERM, self._on_stop)
            signal.signal(signal.SIGINT, self._on_stop)
            signal.signal(signal.SIGHUP, self._on_hup)
            # Same process group: a stop aimed at the group (a supervisor, `oci stop`) reaches
            # granian too, and granian never outlives the launcher.
            self.proc = subprocess.Popen(self.command, env=self.env)
            self._write_address()
            while True:
                try:
                    return self.proc.wait()
                except InterruptedError:  # pragma: no cover (PEP 475 retries)
                    continue
        finally:
            self._cleanup()

    def _write_address(self) -> None:
        # Where the image's HEALTHCHECK (serving/healthcheck.py) finds the port actually bound.
        path = self.env.get("SERVING_ADDRESS_FILE")
        if path:
            host, port = self.bind
            Path(path).write_text(f"{host}:{port}\n")

    def _on_hup(self, signum, frame) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def _on_stop(self, signum, frame) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        (self.runtime_dir / DRAIN_FILE).write_text("draining\n")
        threading.Thread(target=self._stop, name="drain", daemon=True).start()

    def _stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        # Readiness is 503 from now on; load balancers stop sending new work, the server
        # keeps serving what still comes in.
        if proc.poll() is None and self.drain_seconds:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.drain_seconds)
        door = Door(*self.bind)
        if proc.poll() is None:
            # New clients are refused from here on; none the kernel accepted is reset.
            if not door.shut() and door.refused:
                print(
                    f"serving: new connections cannot be held off before the stop "
                    f"({door.refused}); one made in the last instant may be reset",
                    file=sys.stderr,
                )
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self.graceful + 2)
        except subprocess.TimeoutExpired:
            proc.kill()
        finally:
            door.close()

    def _cleanup(self) -> None:
        if self.challenger is not None:
            self.challenger.watcher.stop()
        if self.publisher is not None:
            self.publisher.stop()
        if self.owned_runtime is not None:
            shutil.rmtree(self.owned_runtime, ignore_errors=True)
        else:
            (self.runtime_dir / DRAIN_FILE).unlink(missing_ok=True)


def configure_logging(level: str) -> None:
    """The app's loggers (``serving.*``) on stderr, one line each, where granian logs too."""
    import logging

    logger = logging.getLogger("serving")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper() if level.upper() in logging._nameToLevel else "INFO")
    logger.propagate = False


#: MLflow's HTTP client retries a request 7 times with backoff for up to 120 s each by
#: default: one registry poll then hung for minutes while the tracking server was down, with
#: nothing logged or counted. A poll fails fast instead, is counted, and the next one retries.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def main() -> int:
    configure_logging(os.environ.get("SERVING_LOG_LEVEL", "info"))
    for name, value in MLFLOW_HTTP_DEFAULTS.items():  # the operator's own values win
        os.environ.setdefault(name, value)
    try:
        launcher = Launcher(os.environ)
    except ConfigError as exc:
        print(f"serving: configuration error: {exc}", file=sys.stderr)
        return 2
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
