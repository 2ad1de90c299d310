"""Registry work done once per server, in the launcher process (``serving.server``).

With ``SERVING_MODEL_URI`` set, the launcher resolves the alias, downloads the version, has
``python -m serving.verify`` load it and check its golden examples in a child process, and
only then publishes it to ``<runtime dir>/current.json``. Workers follow that file
(``serving.app``), so they never import MLflow, never download, and never see a version that
failed its checks. A refused version is logged and counted in
``serving_model_reload_failures_total`` (the launcher has its own metrics slot); the workers
keep serving the version they have. The launcher itself never imports ONNX Runtime (see
``serving/verify.py`` for why).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from serving import metrics as m
from serving.config import ServingConfig
from serving.metrics import MetricsStore
from serving.registry import (
    CHALLENGER,
    CHAMPION,
    RegistryWatcher,
    write_pointer,
    write_refusal,
)
from serving.verify import EXIT_GOLDEN

log = logging.getLogger("serving.publisher")
VERIFY_TIMEOUT_S = 300


class ModelRefused(Exception):
    """The candidate failed ``serving.verify``; ``step`` is ``load`` or ``golden``."""

    def __init__(self, step: str, message: str):
        super().__init__(message)
        self.step = step


class Publisher:
    """Owns the master's registry watcher and metrics slot."""

    def __init__(
        self,
        config: ServingConfig,
        runtime_dir: Path,
        uri: str | None = None,
        prefix: str = "",
        store: MetricsStore | None = None,
    ):
        self.config = config
        self.uri = uri or config.model_uri
        self.prefix = prefix
        self.variant = CHALLENGER if prefix else CHAMPION
        self.runtime_dir = Path(runtime_dir)
        self.store = store or MetricsStore(self.runtime_dir / "metrics")
        for step in ("resolve", "download", "load", "golden"):
            self.store.index(m.RELOAD_FAILURES, (("step", step), ("variant", self.variant)))
        cache = config.model_cache_dir or self.runtime_dir / "models"
        self.watcher = RegistryWatcher(
            self.uri,
            cache,
            config.reload_interval,
            accept=self._accept,
            on_failure=self._failure,
        )

    def _accept(self, version: str, path: Path) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "serving.verify", str(path)],
            capture_output=True,
            text=True,
            timeout=VERIFY_TIMEOUT_S,
        )
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelRefused("golden" if proc.returncode == EXIT_GOLDEN else "load", reason)
        write_pointer(self.runtime_dir, version, path, self.uri, self.prefix)
        log.info("published version %s of %s: %s", version, self.uri, proc.stdout.strip())

    def _failure(self, step: str, message: str) -> None:
        labels = (("step", step), ("variant", self.variant))
        self.store.inc(self.store.index(m.RELOAD_FAILURES, labels))
        write_refusal(self.runtime_dir, self.uri, step, message, self.prefix)
        log.error("registry %s failed, serving what we have: %s", step, message)

    def publish_first(self) -> bool:
        """Resolve and publish the current version; False if that failed (logged)."""
        return self.watcher.poll_once()

    def start(self) -> None:
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()
        self.store.close()
