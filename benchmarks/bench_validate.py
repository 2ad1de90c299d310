"""Time the ``validate`` stage on a wide table: 200 columns x 10,000 rows by default.

Generates a seeded table (numeric features with some missing values, categorical features, a
categorical target) and the contract that describes it, then runs the real stage
(``python -m pipeline.stages.validate``: the GX checkpoint, its Data Docs and result.json) in a
temporary directory. Prints one line per repeat (wall-clock and CPU seconds, and the 1-minute
load average at its end: on a shared machine the CPU time is the steadier figure) and the
best wall time.

    python -m benchmarks.bench_validate [--columns 200] [--rows 10000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline.contract import ColumnSpec, Contract, dump_contract

REPO = Path(__file__).resolve().parents[1]


def wide_table(columns: int, rows: int, seed: int = 0) -> tuple[pd.DataFrame, Contract]:
    """A table of ``columns`` columns (one target, a quarter categorical) and its contract."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    specs = []
    target = rng.choice(["a", "b", "c"], size=rows)
    data["target"] = target
    specs.append(ColumnSpec("target", "categorical", "target", categories=("a", "b", "c")))
    for i in range(columns - 1):
        if i % 4 == 3:
            name, levels = f"cat_{i:03d}", tuple(f"v{j}" for j in range(5))
            data[name] = rng.choice(levels, size=rows)
            specs.append(ColumnSpec(name, "categorical", categories=levels, max_missing=0.0))
        else:
            name = f"num_{i:03d}"
            values = rng.normal(0.0, 1.0, size=rows) + (target == "a")
            values[rng.random(rows) < 0.01] = np.nan
            data[name] = values
            specs.append(ColumnSpec(name, "numeric", min=-10.0, max=10.0, max_missing=0.05))
    frame = pd.DataFrame(data)
    return frame, Contract(columns=tuple(specs), min_rows=1, max_rows=None)


def run_once(workdir: Path) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system) of one ``python -m pipeline.stages.validate``."""
    cmd = [
        sys.executable, "-m", "pipeline.stages.validate", "--params", str(workdir / "params.yaml"),
        "--data", str(workdir / "wide.parquet"), "--out", str(workdir / "validation"),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"validate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--columns", type=int, default=200)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    frame, contract = wide_table(args.columns, args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        workdir = Path(tmp)
        frame.to_parquet(workdir / "wide.parquet", index=False)
        (workdir / "contract.yaml").write_text(dump_contract(contract))
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["data"]["contract"] = str(workdir / "contract.yaml")
        (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        load = os.getloadavg()[0]
        print(
            f"validate benchmark: {args.columns} columns x {args.rows} rows, "
            f"{os.cpu_count()} CPUs, load {load:.2f}"
        )
        times = []
        for i in range(args.repeat):
            wall, cpu = run_once(workdir)
            times.append(wall)
            load = os.getloadavg()[0]  # the machine is shared: say how busy it was
            print(f"  run {i + 1}: validate {wall:6.1f} s wall, {cpu:6.1f} s CPU, load {load:.2f}")
        print(f"  best: {min(times):.1f} s wall")


if __name__ == "__main__":
    main()
