"""Serving from the MLflow model registry: resolve an alias, download, watch for changes.

MLflow is imported here, lazily, and only when ``SERVING_MODEL_URI`` is set. Under
``serving.server`` the launcher process does the registry work and publishes each
checked version to ``<runtime dir>/current.json``; workers follow that file and never import
MLflow. Without it (tests, ``flask run``) :class:`RegistryWatcher` runs in-process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving.config import REGISTRY_URI

log = logging.getLogger("serving.registry")

POINTER = "current.json"
#: The last version the launcher refused, and why (workers show it while they have no model).
REFUSED = "refused.json"
#: The challenger's (``SERVING_ROLLOUT``): the same files with this prefix.
CHALLENGER_PREFIX = "challenger-"
#: The two variants a server holds: the ``variant`` of its responses, logs and metrics (and the
#: registry aliases they follow). The champion answers when no rollout is configured.
CHAMPION, CHALLENGER = "champion", "challenger"
_URI = REGISTRY_URI


class RegistryError(Exception):
    """The registry could not give us the model; the message says which step failed."""

    def __init__(self, step: str, message: str):
        super().__init__(message)
        self.step = step


@dataclass(frozen=True)
class RegistryRef:
    name: str
    alias: str | None
    version: str | None

    @classmethod
    def parse(cls, uri: str) -> RegistryRef:
        match = _URI.match(uri)
        if not match:
            raise RegistryError(
                "resolve", f"{uri!r} is not models:/<name>@<alias> or models:/<name>/<version>"
            )
        return cls(match["name"], match["alias"], match["version"])


def resolve_version(ref: RegistryRef) -> str:
    """The version number the alias points at now (MLFLOW_TRACKING_URI picks the store)."""
    if ref.version is not None:
        return ref.version
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(ref.name, ref.alias).version)
    except MlflowException as exc:
        raise RegistryError("resolve", f"models:/{ref.name}@{ref.alias}: {exc.message}") from None
    except Exception as exc:  # connection errors and the like
        raise RegistryError("resolve", f"models:/{ref.name}@{ref.alias}: {exc}") from None


def download_version(ref: RegistryRef, version: str, cache_dir: Path) -> Path:
    """Download version ``version``'s artifacts once into ``cache_dir/<name>/<version>``."""
    final = Path(cache_dir) / ref.name / version
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=final.parent))
    # MLflow draws tqdm bars on stderr while downloading; a server log is no place for them.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        import mlflow.artifacts

        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{ref.name}/{version}", dst_path=str(staging)
        )
        os.replace(staging, final)
    except OSError as exc:
        if final.is_dir():  # another process won the race; its copy is as good
            return final
        raise RegistryError("download", f"models:/{ref.name}/{version}: {exc}") from None
    except Exception as exc:
        raise RegistryError("download", f"models:/{ref.name}/{version}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def write_pointer(runtime_dir: Path, version: str, path: Path, uri: str, prefix: str = "") -> None:
    """Publish a checked version for the workers (atomic replace)."""
    target = Path(runtime_dir) / (prefix + POINTER)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"version": version, "path": str(path), "uri": uri}))
    os.replace(tmp, target)


def write_refusal(runtime_dir: Path, uri: str, step: str, message: str, prefix: str = "") -> None:
    target = Path(runtime_dir) / (prefix + REFUSED)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"uri": uri, "step": step, "message": message}))
    os.replace(tmp, target)


def read_refusal(runtime_dir: Path, prefix: str = "") -> dict[str, str] | None:
    try:
        return json.loads((Path(runtime_dir) / (prefix + REFUSED)).read_text())
    except (OSError, ValueError):
        return None


def read_pointer(runtime_dir: Path, prefix: str = "") -> dict[str, str] | None:
    try:
        return json.loads((Path(runtime_dir) / (prefix + POINTER)).read_text())
    except (OSError, ValueError):
        return None


class RegistryWatcher:
    """Polls an alias; on a new version downloads it and hands the directory to ``accept``.

    ``accept(version, path)`` loads and checks the candidate and raises to refuse it; a
    refused version is not retried until the alias moves again. ``on_failure(step, message)``
    is told about every failed attempt.
    """

    def __init__(
        self,
        uri: str,
        cache_dir: Path,
        interval: float,
        accept: Callable[[str, Path], None],
        on_failure: Callable[[str, str], None],
        current: str | None = None,
    ):
        self.ref = RegistryRef.parse(uri)
        self.uri = uri
        self.cache_dir = Path(cache_dir)
        self.interval = interval
        self.accept = accept
        self.on_failure = on_failure
        self.current = current
        self.refused: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Held while polling. A process that forks workers (gunicorn's master did) may fork while
        # this thread is mid-poll; a child must not inherit a lock (a log stream, the import lock)
        # that the poll holds, so a fork waits for the poll to finish (see start()).
        self._busy = threading.Lock()

    def poll_once(self) -> bool:
        """One poll; True when a new version was accepted."""
        try:
            version = resolve_version(self.ref)
        except RegistryError as exc:
            self.on_failure(exc.step, str(exc))
            return False
        if version in (self.current, self.refused):
            return False
        log.info(
            "%s now points at version %s (serving %s)",
            self.uri,
            version,
            self.current or "nothing yet",
        )
        try:
            path = download_version(self.ref, version, self.cache_dir)
            self.accept(version, path)
        except RegistryError as exc:
            self.on_failure(exc.step, str(exc))
            return False
        except Exception as exc:  # the candidate failed its checks
            self.refused = version
            self.on_failure(getattr(exc, "step", "load"), f"version {version}: {exc}")
            return False
        self.current, self.refused = version, None
        return True

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        os.register_at_fork(
            before=self._busy.acquire,
            after_in_parent=self._busy.release,
            after_in_child=self._busy.release,
        )
        self._thread = threading.Thread(target=self._run, name="registry-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._busy:
                try:
                    self.poll_once()
                except Exception:  # never let the watcher die silently
                    log.exception("registry poll failed")
