"""Time the pipeline the way a user meets it: clean ``dvc repro``, a no-op rerun, a params change.

Runs in a fresh ``git clone`` of the committed project (own DVC cache and MLflow store), with
the environment already installed. Prints one line per measurement.

    python -m benchmarks.bench_pipeline [--estimator NAME] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, re.findall(r"Running stage '(\w+)'", proc.stdout)


def bench(repo: Path, estimator: str | None) -> list[tuple[str, float, list[str]]]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        params_file = clone / "params.yaml"
        params = yaml.safe_load(params_file.read_text())
        if estimator:
            params["train"]["estimator"] = estimator
            params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        dvc = [str(BIN / "dvc"), "repro"]
        results.append(("clean dvc repro", *_timed(dvc, clone, env)))
        results.append(("no-op dvc repro", *_timed(dvc, clone, env)))
        params["train"]["seed"] = int(params["train"]["seed"]) + 1
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        results.append(("dvc repro after a train.* change", *_timed(dvc, clone, env)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--estimator", help="override train.estimator for the run")
    parser.add_argument("--repo", default=".", help="repository to clone (committed state)")
    args = parser.parse_args()
    repo = Path(args.repo).resolve()
    estimator = (
        args.estimator or yaml.safe_load((repo / "params.yaml").read_text())["train"]["estimator"]
    )
    load = os.getloadavg()[0]
    print(f"pipeline benchmark: estimator {estimator}, {os.cpu_count()} CPUs, load {load:.2f}")
    for label, seconds, ran in bench(repo, args.estimator):
        stages = ", ".join(ran) if ran else "none"
        print(f"  {label:34} {seconds:6.1f} s   stages run: {stages}")


if __name__ == "__main__":
    main()
