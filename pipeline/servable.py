"""Before an alias moves: can the server actually serve this registry version?

``require_servable`` downloads the version and runs the check the prediction server runs before
it swaps a version in (``python -m serving.verify``: load the descriptor and the ONNX graph,
reproduce the golden rows), in a process of its own. ``make promote`` and ``make rollback``
call it, so an unservable version never becomes ``@champion``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.errors import PipelineError

#: Exit codes of ``serving.verify``.
_REASONS = {2: "cannot be loaded", 3: "does not reproduce its golden rows"}
#: Versions this process has verified. A registered version's files never change, so a version
#: that passed once (say, promoted, rolled back from, then promoted again) is not re-downloaded.
_VERIFIED: dict[tuple[str, str, str], str] = {}


def require_servable(name: str, version: str) -> str:
    """Download ``models:/name/version`` and verify it as the server does; return the check's
    summary, or raise a :class:`PipelineError` saying why the server would refuse it."""
    import mlflow
    import mlflow.artifacts

    key = (mlflow.get_tracking_uri(), name, str(version))
    if key in _VERIFIED:
        return _VERIFIED[key]
    with tempfile.TemporaryDirectory(prefix="servable-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=tmp
            )
        except Exception as exc:  # MLflow and storage errors alike
            raise PipelineError(
                f"version {version} of '{name}' could not be downloaded to check it: {exc}"
            ) from None
        proc = subprocess.run(
            [sys.executable, "-m", "serving.verify", str(Path(path))],
            capture_output=True,
            text=True,
            timeout=300,
        )
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        what = _REASONS.get(proc.returncode, "failed the server's check")
        raise PipelineError(
            f"version {version} of '{name}' {what}, so the prediction server would refuse it: "
            f"{reason.replace(tmp, '<download>')}. The alias was not moved."
        )
    _VERIFIED[key] = proc.stdout.strip()
    return _VERIFIED[key]
