"""The stage CLI wrapper: clean exits, and SIGTERM that ends the MLflow run instead of
leaving it RUNNING."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

STAGE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import mlflow
    from pipeline.errors import cli
    from pipeline.io import atomic_path

    @cli("train")
    def main():
        mlflow.set_tracking_uri(sys.argv[1])
        with mlflow.start_run() as run:
            Path(sys.argv[2]).write_text(run.info.run_id)
            with atomic_path(sys.argv[3]) as tmp:
                tmp.write_text("half")
                os.kill(os.getpid(), signal.SIGTERM)
                tmp.write_text("never")

    raise SystemExit(main())
    """
)


def test_sigterm_ends_the_run_killed_and_keeps_no_output(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_file, out = tmp_path / "run_id", tmp_path / "model.txt"
    proc = subprocess.run(
        [sys.executable, "-c", STAGE, store, str(run_file), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "train stopped by SIGTERM; its outputs were not written (the MLflow run, if one "
        "started, is marked KILLED)."
    )
    assert "Traceback" not in proc.stderr
    assert not out.exists() and list(tmp_path.glob("*model*")) == []
    import mlflow

    run = mlflow.tracking.MlflowClient(store).get_run(run_file.read_text())
    assert run.info.status == "KILLED"
    assert run.info.end_time is not None


def test_a_reader_that_goes_away_ends_the_command_quietly():
    # `python -m pipeline.summary | head -1`: the pipe closes while the command still prints.
    script = textwrap.dedent(
        """
        from pipeline.errors import cli

        @cli("summary")
        def main():
            for n in range(100_000):
                print(f"line {n}")

        raise SystemExit(main())
        """
    )
    proc = subprocess.run(
        [
            "bash",
            "-c",
            f'"{sys.executable}" -c "$0" | head -1; echo "exit ${{PIPESTATUS[0]}}"',
            script,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.splitlines() == ["line 0", "exit 141"]
    assert proc.stderr == ""
