"""Latency of every estimator x task: the native model against its ONNX graph, same run.

For each shipped estimator and each task it supports, the estimator is trained in-process
with its ``params.yaml`` block on a table that ships inside a package (multiclass: Palmer
Penguins, the default data; binary: scikit-learn's breast cancer; regression: scikit-learn's
diabetes), converted with the export stage's :func:`pipeline.onnx_export.to_onnx`, and both
are timed call by call on the same raw rows, for one row and for a batch of 1,000 rows (test
rows drawn with replacement), after a warm-up:

* native: raw rows -> ``to_model_frame`` -> the fitted transformer -> the estimator
  (``NativeModel.predict_output``, what ``evaluate`` scores);
* onnx: the graph in ONNX Runtime on the ``model_spec.feed.build_feed`` arrays of the same
  rows (built once, as the server does after validating a request).

Medians and 99th percentiles are in microseconds. Parity of the two on the test rows is
printed too. ``--model-dir`` instead times the pipeline's own exported model.

    python -m benchmarks.bench_model [--estimators a,b] [--tasks binary,regression]
                                     [--repeat-scale 1.0]
    python -m benchmarks.bench_model --model-dir models/export   # the exported model only
    python -m benchmarks.bench_model --compare   # validation scores on the default data

``--compare`` trains every estimator for the default data's task on the pipeline's own split
of ``data.source`` (``preprocess.split_data`` with the ``preprocess`` params) and prints the
validation metrics and the fit time, which is how ``train.estimator``'s default is chosen.
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


def _tables(params_path: str):
    from palmerpenguins import load_penguins

    from model_spec.task import Task
    from pipeline.config import load_params
    from pipeline.contract import load_contract
    from tests import bundled

    params = load_params(params_path)
    cancer, diabetes = bundled.breast_cancer(), bundled.diabetes()
    return {
        Task.MULTICLASS: (
            "penguins",
            load_penguins(),
            "species",
            load_contract(params.data.contract),
        ),
        Task.BINARY: (
            "breast cancer",
            cancer,
            "diagnosis",
            bundled.contract_for(cancer, "diagnosis"),
        ),
        Task.REGRESSION: (
            "diabetes",
            diabetes,
            "progression",
            bundled.contract_for(diabetes, "progression"),
        ),
    }


def _fit(name, task, table, train_params):
    from sklearn.model_selection import train_test_split

    from pipeline.model import NativeModel
    from pipeline.stages.preprocess import fit_preprocessor, to_model_frame
    from pipeline.stages.train import train_model

    _, frame, target, contract = table
    by = frame[target] if task.is_classification else None
    rest, test = train_test_split(frame, test_size=0.2, random_state=42, stratify=by)
    by = rest[target] if task.is_classification else None
    train, val = train_test_split(rest, test_size=0.25, random_state=42, stratify=by)
    pre = fit_preprocessor(train, contract)

    def xy(f):
        y = f[target].to_numpy(float) if task.is_regression else f[target].astype(str).to_numpy()
        return pre.transform(to_model_frame(f, contract)), y

    result = train_model(name, train_params, *xy(train), *xy(val), task, target)
    native = NativeModel(pre, result.model, result.family, name, result.classes, contract, task)
    return native, test.reset_index(drop=True)


def _bench_one(native, test, contract, task, session, scale: float):
    from pipeline import onnx_export

    outputs = [o.name for o in session.get_outputs()]
    rows = {
        "1 row": test.iloc[[0]],
        f"{BATCH:,} rows": test.sample(BATCH, replace=True, random_state=0),
    }
    results = []
    for size, raw in rows.items():
        feeds = onnx_export.onnx_feeds(raw, contract)
        single = len(raw) == 1
        native_repeat = max(5, int((200 if single else 20) * scale))
        onnx_repeat = max(5, int((2_000 if single else 200) * scale))
        native_us = _time_us(lambda r=raw: native.predict_output(r), native_repeat, 5)
        onnx_us = _time_us(lambda f=feeds: session.run(outputs, f), onnx_repeat, 20)
        results.append((size, native_us, onnx_us))
    return results


def bench_matrix(args: argparse.Namespace) -> None:
    from model_spec.task import Task
    from pipeline import onnx_export
    from pipeline.config import load_params
    from pipeline.estimators import ESTIMATORS, parity_error

    train_params = load_params(args.params).train
    tables = _tables(args.params)
    names = args.estimators.split(",") if args.estimators else list(ESTIMATORS)
    tasks = [Task.parse(t) for t in args.tasks.split(",")] if args.tasks else list(Task)
    print(
        f"  {'estimator':23} {'task':10} {'table':13} {'rows':>11} {'native med':>11} "
        f"{'p99':>9} {'onnx med':>9} {'p99':>8} {'speedup':>8} {'parity':>8}"
    )
    for name in names:
        estimator = ESTIMATORS[name]
        for task in tasks:
            if task not in estimator.tasks:
                continue
            table = tables[task]
            native, test = _fit(name, task, table, train_params)
            session = onnx_export.onnx_session(onnx_export.to_onnx(native, 17))
            contract = table[3]
            runtime = onnx_export.onnx_output(session, test, contract, task)
            parity = float(parity_error(task, native.predict_output(test), runtime).max())
            for size, native_us, onnx_us in _bench_one(
                native, test, contract, task, session, args.repeat_scale
            ):
                n_med, o_med = np.median(native_us), np.median(onnx_us)
                print(
                    f"  {name:23} {task.value:10} {table[0]:13} {size:>11} {n_med:>11,.0f} "
                    f"{np.percentile(native_us, 99):>9,.0f} {o_med:>9,.0f} "
                    f"{np.percentile(onnx_us, 99):>8,.0f} {n_med / o_med:>7,.0f}x {parity:>8.1e}",
                    flush=True,
                )


def bench_export(args: argparse.Namespace) -> None:
    """The pipeline's exported model against the trained one it came from."""
    from model_spec.descriptor import ModelDescriptor
    from model_spec.feed import build_feed
    from pipeline.config import load_params
    from pipeline.contract import load_contract
    from pipeline.io import read_json, read_table
    from pipeline.model import RUN_FILE, load_native_model
    from pipeline.onnx_export import onnx_session

    params = load_params(args.params)
    contract = load_contract(params.data.contract)
    native = load_native_model(args.train_dir, args.preprocessor, contract)
    model_dir = Path(args.model_dir)
    descriptor = ModelDescriptor.read(model_dir)
    trained_run = read_json(Path(args.train_dir) / RUN_FILE)["run_id"]
    if descriptor.lineage.run_id != trained_run:
        raise SystemExit(
            f"{model_dir} was exported from run {descriptor.lineage.run_id}, but "
            f"{args.train_dir} holds run {trained_run}: run `dvc repro export` first."
        )
    session = onnx_session(model_dir / descriptor.onnx.file)
    test = read_table(args.test)
    print(f"  exported model: {native.estimator_name} ({native.task.value})")
    print(f"  {'rows':>11}  {'native med':>11}  {'p99':>9}  {'onnx med':>9}  {'p99':>8}")
    rows = {
        "1 row": test.iloc[[0]],
        f"{BATCH:,} rows": test.sample(BATCH, replace=True, random_state=0),
    }
    outputs = list(descriptor.onnx.outputs)
    for size, raw in rows.items():
        feeds = build_feed(descriptor, {c: raw[c] for c in descriptor.input_names})
        single = len(raw) == 1
        n = _time_us(
            lambda r=raw: native.predict_output(r),
            int((300 if single else 40) * args.repeat_scale),
            10,
        )
        o = _time_us(
            lambda f=feeds: session.run(outputs, f),
            int((5_000 if single else 300) * args.repeat_scale),
            50,
        )
        print(
            f"  {size:>11}  {np.median(n):>11,.1f}  {np.percentile(n, 99):>9,.1f}  "
            f"{np.median(o):>9,.1f}  {np.percentile(o, 99):>8,.1f}"
        )


def compare_estimators(args: argparse.Namespace) -> None:
    """Validation metrics of every estimator that supports the default data's task."""
    from pipeline.config import load_params
    from pipeline.contract import load_contract
    from pipeline.estimators import ESTIMATORS
    from pipeline.sources import load_source
    from pipeline.stages.preprocess import fit_preprocessor, split_data, to_model_frame
    from pipeline.stages.train import train_model

    params = load_params(args.params)
    contract = load_contract(params.data.contract)
    task, target, p = contract.task, contract.target, params.preprocess
    frame = load_source(params.data.source)
    splits = split_data(frame, target, p.seed, p.test_size, p.val_size)
    pre = fit_preprocessor(splits.train, contract)

    def xy(f):
        y = f[target].to_numpy(float) if task.is_regression else f[target].astype(str).to_numpy()
        return pre.transform(to_model_frame(f, contract)), y

    print(f"  {params.data.source} ({task.value}): validation split of {len(splits.val)} rows")
    for name, estimator in ESTIMATORS.items():
        if task not in estimator.tasks:
            continue
        start = time.perf_counter()
        result = train_model(name, params.train, *xy(splits.train), *xy(splits.val), task, target)
        seconds = time.perf_counter() - start
        shown = ", ".join(
            f"{k} {v:.4f}" for k, v in result.val_metrics.items() if k != "best_epoch"
        )
        print(f"  {name:23} {shown}  (fit {seconds:.1f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--estimators", help="comma-separated (default: every shipped one)")
    parser.add_argument("--tasks", help="comma-separated: binary, multiclass, regression")
    parser.add_argument("--model-dir", help="time this exported model instead of the matrix")
    parser.add_argument(
        "--compare", action="store_true", help="validation scores per estimator, default data"
    )
    parser.add_argument("--train-dir", default="models/train")
    parser.add_argument("--preprocessor", default="models/preprocess/preprocessor.joblib")
    parser.add_argument("--test", default="data/processed/test.parquet")
    parser.add_argument(
        "--repeat-scale", type=float, default=1.0, help="multiply every repetition count"
    )
    args = parser.parse_args()
    # The same quiet, deterministic TensorFlow set-up the pipeline's stages use.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    load = os.getloadavg()
    print(
        f"model benchmark: {os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        "(1/5/15 min); times in microseconds per call"
    )
    if args.compare:
        compare_estimators(args)
    elif args.model_dir:
        bench_export(args)
    else:
        bench_matrix(args)


if __name__ == "__main__":
    main()
