"""Latency of the native model and of its ONNX export, measured in the same run.

The native model is what ``evaluate`` scores: raw rows -> ``to_model_frame`` -> the fitted
scikit-learn transformer -> the estimator (or Keras network). The ONNX model is
``model.onnx`` from the export directory, run by ONNX Runtime on the same raw values as
``[N, 1]`` arrays. Each is timed call by call, for one row and for a batch of 1,000 rows
(test rows drawn with replacement), after a warm-up; medians and 99th percentiles are in
microseconds.

    python -m benchmarks.bench_model [--model-dir models/export] [--repeat-scale 1.0]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

BATCH = 1_000


def _time_us(fn: Callable[[], object], repeat: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    samples = np.empty(repeat)
    for i in range(repeat):
        start = time.perf_counter_ns()
        fn()
        samples[i] = (time.perf_counter_ns() - start) / 1_000
    return samples


def bench(args: argparse.Namespace) -> tuple[list[tuple[str, str, np.ndarray]], str]:
    from pipeline.config import load_params
    from pipeline.contract import load_contract
    from pipeline.io import read_json, read_table
    from pipeline.onnx_export import onnx_feeds, onnx_session
    from pipeline.preprocess import to_model_frame
    from pipeline.train import load_native_model

    params = load_params(args.params)
    contract = load_contract(params.data.contract)
    native = load_native_model(args.train_dir, args.preprocessor, contract)
    model_dir = Path(args.model_dir)
    descriptor = read_json(model_dir / "model.json")
    trained_run = read_json(Path(args.train_dir) / "run.json")["run_id"]
    if descriptor["lineage"]["run_id"] != trained_run:
        raise SystemExit(
            f"{model_dir} was exported from run {descriptor['lineage']['run_id']}, but "
            f"{args.train_dir} holds run {trained_run}: run `dvc repro export` first."
        )
    session = onnx_session(model_dir / descriptor["onnx"]["file"])
    outputs = descriptor["onnx"]["outputs"]

    test = read_table(args.test)
    rows = {
        "1 row": test.iloc[[0]],
        f"{BATCH:,} rows": test.sample(BATCH, replace=True, random_state=0),
    }
    scale = args.repeat_scale
    results = []
    for size, raw in rows.items():
        feeds = onnx_feeds(to_model_frame(raw, contract), contract)
        single = len(raw) == 1
        native_repeat = int((300 if single else 40) * scale)
        onnx_repeat = int((5_000 if single else 300) * scale)
        results.append(
            (size, "native", _time_us(lambda r=raw: native.predict_proba(r), native_repeat, 10))
        )
        results.append(
            (size, "onnx", _time_us(lambda f=feeds: session.run(outputs, f), onnx_repeat, 50))
        )
    return results, native.estimator_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train-dir", default="models/train")
    parser.add_argument("--preprocessor", default="models/preprocess/preprocessor.joblib")
    parser.add_argument("--model-dir", default="models/export")
    parser.add_argument("--test", default="data/processed/test.parquet")
    parser.add_argument(
        "--repeat-scale", type=float, default=1.0, help="multiply every repetition count"
    )
    args = parser.parse_args()
    # The same quiet, deterministic TensorFlow set-up the pipeline's stages use.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    load = os.getloadavg()
    results, estimator = bench(args)
    print(
        f"model benchmark: {estimator}, {os.cpu_count()} CPUs, "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min)"
    )
    print(f"  {'rows':>11}  {'runtime':7}  {'calls':>6}  {'median µs':>11}  {'p99 µs':>11}")
    medians = {}
    for size, runtime, samples in results:
        median, p99 = np.median(samples), np.percentile(samples, 99)
        medians[size, runtime] = median
        print(f"  {size:>11}  {runtime:7}  {len(samples):>6}  {median:>11,.1f}  {p99:>11,.1f}")
    for size in dict.fromkeys(size for size, _, _ in results):
        speedup = medians[size, "native"] / medians[size, "onnx"]
        print(f"  {size:>11}  ONNX Runtime is {speedup:,.0f}x faster than the native model")


if __name__ == "__main__":
    main()
