"""The whole pipeline on a large default-shaped table: wall time and peak memory per stage.

Builds an ``--rows``-row table shaped like the default data (Palmer Penguins rows drawn with
replacement, numeric features jittered by 2% of their spread and kept inside the contract's
ranges, missing values where the originals have them), points ``data.source`` of a fresh
``git clone`` of the committed project at it, and runs ``dvc repro --single-item <stage>`` for
every stage in order under ``/usr/bin/time``: elapsed seconds and the peak resident set size of
the largest process the stage ran (the stage's Python process).

    python -m benchmarks.bench_scale [--rows 1000000] [--estimator NAME] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

BIN = Path(sys.executable).parent
STAGES = ("ingest", "validate", "preprocess", "train", "evaluate", "export", "gate")


def default_shaped_table(rows: int, contract_path: Path, seed: int = 0):
    """``rows`` penguin-like rows (see the module docstring)."""
    from palmerpenguins import load_penguins

    from pipeline.contract import load_contract

    contract = load_contract(contract_path)
    base = load_penguins()
    base = base[base[contract.target].notna()].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    frame = base.iloc[rng.integers(0, len(base), size=rows)].reset_index(drop=True)
    for name in contract.numeric_features:
        spec = contract.column(name)
        values = frame[name].to_numpy(dtype=float)
        jitter = rng.normal(0.0, 0.02 * np.nanstd(base[name].to_numpy(dtype=float)), rows)
        jittered = values + jitter
        low = spec.min if spec.min is not None else -np.inf
        high = spec.max if spec.max is not None else np.inf
        frame[name] = np.clip(jittered, low, high)
        if str(base[name].dtype).startswith("int"):
            frame[name] = np.round(frame[name])
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--estimator", help="train.estimator for the run (default: params.yaml's)")
    parser.add_argument("--keep", help="run in this directory and keep it (default: a temp dir)")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        clone = work / "clone"
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        table = default_shaped_table(args.rows, clone / "data" / "contract.yaml")
        table.to_parquet(clone / "data" / "large.parquet", index=False)
        params_path = clone / "params.yaml"
        params = yaml.safe_load(params_path.read_text())
        params["data"]["source"] = "data/large.parquet"
        if args.estimator:
            params["train"]["estimator"] = args.estimator
        params["registry"]["model_name"] = "penguins-large"
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        load = os.getloadavg()
        print(
            f"scale benchmark: {args.rows:,} rows, estimator {params['train']['estimator']}, "
            f"{os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
            flush=True,
        )
        total = 0.0
        for stage in STAGES:
            proc = subprocess.run(
                ["/usr/bin/time", "-f", "__time__ %e %M", str(BIN / "dvc"), "repro",
                 "--single-item", stage],
                cwd=clone, env=env, capture_output=True, text=True,
            )  # fmt: skip
            match = re.search(r"__time__ ([\d.]+) (\d+)", proc.stderr)
            seconds, kb = float(match.group(1)), int(match.group(2))
            total += seconds
            status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            print(
                f"  {stage:10} {seconds:8.1f} s  peak RSS {kb / 1024:8.0f} MiB  {status}",
                flush=True,
            )
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-2000:])
                break
        print(f"  {'total':10} {total:8.1f} s")


if __name__ == "__main__":
    main()
