"""Time the ``monitor`` step on a large prediction log of the default data.

Writes ``--rows`` log lines in the server's format (test-split rows drawn with replacement,
labels as outputs, one feedback line per row), then runs ``python -m pipeline.stages.monitor`` on
them as a fresh process, as `make monitor` would (imports, reading, statistics, report). With
``--evidently-python`` (an interpreter with evidently 0.7 and pandas < 3) it also times
``Report([DataDriftPreset()])`` plus its HTML on the same rows, in the same run.

    python -m benchmarks.bench_monitor --params params.yaml [--rows 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

EVIDENTLY_SCRIPT = """
import sys, time
started = time.perf_counter()
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
imported = time.perf_counter()
ref, cur, out = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2]), sys.argv[3]
Report([DataDriftPreset()]).run(cur, ref).save_html(out)
print(f"{imported - started:.3f} {time.perf_counter() - imported:.3f}")
"""


def write_log(
    directory: Path, rows: int, seed: int, params_path: str
) -> tuple[Path, Path, Path, Path]:
    """The prediction log, feedback log, reference and current-rows Parquet files."""
    from palmerpenguins import load_penguins

    from pipeline.config import load_params
    from pipeline.contract import load_contract
    from pipeline.stages.preprocess import split_data

    params = load_params(params_path)
    contract = load_contract(params.data.contract)
    p = params.preprocess
    splits = split_data(load_penguins(), contract.target, p.seed, p.test_size, p.val_size)
    rng = np.random.default_rng(seed)
    picked = splits.test.iloc[rng.integers(0, len(splits.test), rows)].reset_index(drop=True)
    columns = [*contract.feature_names, contract.target]
    reference = directory / "train.parquet"
    splits.train[columns].to_parquet(reference)
    current = directory / "current.parquet"
    picked[columns].to_parquet(current)

    start = datetime.now(UTC) - timedelta(hours=1)
    log, feedback = directory / "predictions.jsonl", directory / "feedback.jsonl"
    records = picked[contract.feature_names].astype(object).where(picked.notna(), None)
    with open(log, "w") as out, open(feedback, "w") as fb:
        for i, (inputs, label) in enumerate(
            zip(records.to_dict("records"), picked[contract.target], strict=True)
        ):
            ts = (start + timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            line = {
                "ts": ts,
                "request_id": f"r{i}",
                "row": 0,
                "model": {"name": params.registry.model_name, "version": "1"},
                "variant": "champion",
                "served": True,
                "inputs": inputs,
                "output": {"label": label, "probabilities": {label: 1.0}},
                "latency_ms": 1.0,
            }
            out.write(json.dumps(line) + "\n")
            fb.write(json.dumps({"ts": ts, "request_id": f"r{i}", "row": 0, "actual": label}))
            fb.write("\n")
    return log, feedback, reference, current


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evidently-python", help="an interpreter with evidently 0.7")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        tmp = Path(tmp)
        log, feedback, reference, current = write_log(tmp, args.rows, args.seed, args.params)
        size = log.stat().st_size / 1e6
        print(f"bench-monitor: {args.rows:,} logged rows ({size:.1f} MB) of the test split")
        cmd = [sys.executable, "-m", "pipeline.stages.monitor", "--params", args.params,
               "--predictions", str(log), "--feedback", str(feedback),
               "--reference", str(reference), "--out", str(tmp / "report")]  # fmt: skip
        times, cpu = [], []
        for _ in range(args.repeat):
            before = _child_cpu()
            started = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            cpu.append(_child_cpu() - before)
        summary = json.loads((tmp / "report" / "summary.json").read_text())
        assert summary["volume"]["rows"] == args.rows, summary["volume"]
        print(
            f"  monitor (fresh process, {args.repeat} runs): median {np.median(times):.2f} s, "
            f"max {max(times):.2f} s; CPU (user+sys) median {np.median(cpu):.2f} s; "
            f"status {summary['status']}, live "
            f"{summary['live_metric']['metric']} {summary['live_metric']['value']}"
        )
        if args.evidently_python:
            evid = []
            for _ in range(args.repeat):
                before = _child_cpu()
                started = time.perf_counter()
                proc = subprocess.run(
                    [args.evidently_python, "-c", EVIDENTLY_SCRIPT, str(reference),
                     str(current), str(tmp / "evidently.html")],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                imported, ran = (float(x) for x in proc.stdout.split())
                evid.append((time.perf_counter() - started, imported, ran, _child_cpu() - before))
            wall = np.median([e[0] for e in evid])
            print(
                f"  evidently DataDriftPreset + HTML on the same rows: median {wall:.2f} s, "
                f"CPU {np.median([e[3] for e in evid]):.2f} s "
                f"(import {np.median([e[1] for e in evid]):.2f} s, report "
                f"{np.median([e[2] for e in evid]):.2f} s); it reads a table, so parsing "
                "the log is not included"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
