"""``make ui``: the MLflow UI (``mlflow server``) on the project's store, at 127.0.0.1:5000.

The store is :func:`pipeline.tracking.tracking_uri`: ``MLFLOW_TRACKING_URI`` when set, else the
embedded ``sqlite:///<repo>/mlruns/mlflow.db``. For the embedded store the server also serves
artifacts from ``mlruns/artifacts`` (``--artifacts-destination``), where experiments created
through the UI then keep theirs; the pipeline's own experiments already record absolute
``file://`` artifact locations, which the server reads directly. A remote tracking server
(``http(s)://``) has its own UI, so this command refuses it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline.errors import PipelineError, cli
from pipeline.tracking import LOCAL_STORE, tracking_uri

HEALTH_TIMEOUT_S = 180


def server_command(uri: str, host: str, port: int, artifacts: Path | None) -> list[str]:
    """The ``mlflow server`` command line for a store (and, if local, its artifact root)."""
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", uri,
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    if artifacts is not None:
        command += ["--serve-artifacts", "--artifacts-destination", artifacts.resolve().as_uri()]
    return command


def store_for_ui() -> tuple[str, Path | None]:
    """The backend store URI, and the artifact directory when the store is the embedded one."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        raise PipelineError(
            f"MLFLOW_TRACKING_URI is a tracking server ({uri}); open it in a browser, it has its "
            "own UI. `make ui` serves a local store."
        )
    if "MLFLOW_TRACKING_URI" in os.environ:
        return uri, None
    LOCAL_STORE.mkdir(exist_ok=True)
    return uri, LOCAL_STORE / "artifacts"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """Poll ``<url>/health`` until it answers, the server exits, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


@cli("ui")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)

    uri, artifacts = store_for_ui()
    if not _port_free(args.host, args.port):
        raise PipelineError(
            f"port {args.port} on {args.host} is in use (another `make ui`?); "
            f"pick another one: `make ui UI_PORT={args.port + 1}`."
        )
    url = f"http://{args.host}:{args.port}"
    env = dict(os.environ)
    # mlflow server starts uvicorn from PATH: make it this environment's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # The server's job runner (seven huey consumers for GenAI scorers and trace roll-ups) is
    # not needed to browse runs and models, and costs a lot on a small machine.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    print(f"ui: starting the MLflow UI at {url} on {uri} (ready in ~15 s) ...", flush=True)
    # Its own process group, so stopping this command stops the server and all its workers.
    proc = subprocess.Popen(
        server_command(uri, args.host, args.port, artifacts), env=env, start_new_session=True
    )
    # On SIGTERM only signal the group: the main thread's proc.wait() then returns.
    signal.signal(signal.SIGTERM, lambda *_: _signal_group(proc, signal.SIGTERM))
    try:
        if wait_healthy(url, proc):
            print(f"ui: ready: {url}  (Ctrl-C stops it)", flush=True)
        code = proc.wait()
    except KeyboardInterrupt:
        stop_server(proc)
        return
    if code not in (0, -signal.SIGTERM):
        raise PipelineError(f"mlflow server exited with status {code}; see its output above.")


def _signal_group(proc: subprocess.Popen, sig: int) -> bool:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_server(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM the server's process group, SIGKILL it if it is still there after ``grace`` s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _signal_group(proc, sig):
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


if __name__ == "__main__":
    raise SystemExit(main())
