"""Champion against challenger, from the prediction log (and the feedback log, if any).

    python -m serving.compare --log predictions.jsonl [--feedback feedback.jsonl]

Reads the log and its rotated files (``<file>.N`` ... ``<file>.1``, ``<file>``) and reports, per
variant, rows, requests and request latency (p50, p99, from ``latency_ms``); where both
variants scored the same row (``SERVING_ROLLOUT=shadow``), their agreement (same label, or
values within 1% for regression); and, with feedback, each variant's metric on the rows
whose outcome is known (accuracy, or mean absolute error for regression) and the
challenger-minus-champion difference with a 95% confidence interval (paired when the
variants scored the same rows, else two independent samples). Damaged lines are skipped and
counted (:mod:`model_spec.logs`). ``latency_ms`` spans the same work for both variants: from
the request's start to its outputs (a shadow row adds its own validation and scoring to the
part of the request both share).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from model_spec.logs import (
    Damage,
    LogError,
    feedback_problem,
    log_files,
    prediction_problem,
    read_records,
)

VARIANTS = ("champion", "challenger")
Z95 = 1.959964


def read_log(path: Path, problem, what: str) -> tuple[list[dict[str, Any]], Damage]:
    """The records of a log and its rotated files, damaged lines skipped and counted."""
    damage = Damage()
    return read_records(log_files(path), problem, damage, what), damage


def _percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))] if data else math.nan


def _mean_ci(values: list[float]) -> tuple[float, float, float]:
    mean = statistics.fmean(values)
    half = Z95 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, mean - half, mean + half


def compare(predictions: list[dict[str, Any]], feedback: list[dict[str, Any]]) -> dict[str, Any]:
    rows: dict[str, dict[tuple[str, int], dict[str, Any]]] = {v: {} for v in VARIANTS}
    lines = dict.fromkeys(VARIANTS, 0)
    reused = dict.fromkeys(VARIANTS, 0)
    latency: dict[str, list[float]] = {v: [] for v in VARIANTS}
    versions: dict[str, set[str]] = defaultdict(set)
    for r in predictions:
        v = r.get("variant", "champion")
        if v not in rows:
            continue
        key = (r["request_id"], r.get("row", 0))
        lines[v] += 1
        if key in rows[v]:  # a client reused an X-Request-ID: the later row is the one joined
            reused[v] += 1
        rows[v][key] = r["output"]
        if key[1] == 0 and "latency_ms" in r:  # once per request
            latency[v].append(r["latency_ms"])
        versions[v].add(str(r["model"]["version"]))
    # Each variant's task from its own outputs: a challenger of another task is reported as
    # such, not compared.
    tasks = {
        v: ("regression" if any("value" in o for o in rows[v].values()) else "classification")
        for v in VARIANTS
        if rows[v]
    }
    comparable = len(set(tasks.values())) <= 1
    regression = tasks.get("champion", tasks.get("challenger")) == "regression"
    report: dict[str, Any] = {
        "task": "regression" if regression else "classification",
        "comparable": comparable,
    }
    scorable: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    for v in VARIANTS:
        task = tasks.get(v, report["task"])
        out = "value" if task == "regression" else "label"
        # A prediction logged as null (a model that overflowed) is neither agreement nor score.
        scorable[v] = {
            k: o for k, o in rows[v].items() if _usable(o.get(out), task == "regression")
        }
        report[v] = {
            "task": task,
            "rows": lines[v],
            "requests": len(latency[v]),
            "reused_request_ids": reused[v],
            "versions": sorted(versions[v]),
            "latency_p50_ms": _percentile(latency[v], 0.5),
            "latency_p99_ms": _percentile(latency[v], 0.99),
        }
    if not comparable:
        report["paired_rows"], report["agreement"] = 0, None
        if feedback:
            report["difference"] = {
                "metric": None,
                "challenger_minus_champion": None,
                "ci95": None,
                "method": (
                    f"not comparable: the champion does {tasks['champion']} and the "
                    f"challenger {tasks['challenger']}"
                ),
            }
        return report
    both = scorable["champion"].keys() & scorable["challenger"].keys()

    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        if regression:
            return abs(a["value"] - b["value"]) <= 0.01 * max(1.0, abs(a["value"]))
        return a["label"] == b["label"]

    report["paired_rows"] = len(both)
    report["agreement"] = (
        sum(same(rows["champion"][k], rows["challenger"][k]) for k in both) / len(both)
        if both
        else None
    )
    actual = {
        (f["request_id"], f.get("row", 0)): f["actual"]
        for f in feedback
        if _usable(f["actual"], regression)
    }
    if actual:

        def score(output: dict[str, Any], truth: Any) -> float:
            if regression:
                return abs(output["value"] - float(truth))  # absolute error
            return float(output["label"] == truth)  # correct

        scored = {
            v: {k: score(o, actual[k]) for k, o in scorable[v].items() if k in actual}
            for v in VARIANTS
        }
        metric = "mae" if regression else "accuracy"
        for v in VARIANTS:
            values = list(scored[v].values())
            report[v][metric] = statistics.fmean(values) if values else None
            report[v]["with_feedback"] = len(values)
        paired = scored["champion"].keys() & scored["challenger"].keys()
        if len(paired) > 1:
            diffs = [scored["challenger"][k] - scored["champion"][k] for k in paired]
            mean, lo, hi = _mean_ci(diffs)
            how = "paired"
        elif all(len(scored[v]) > 1 for v in VARIANTS):
            a, b = list(scored["champion"].values()), list(scored["challenger"].values())
            mean = statistics.fmean(b) - statistics.fmean(a)
            se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
            lo, hi, how = mean - Z95 * se, mean + Z95 * se, "independent"
        else:
            mean = lo = hi = None
            if not rows["challenger"]:
                how = "no challenger rows in the log (is SERVING_ROLLOUT off?)"
            else:
                n = min(len(scored[v]) for v in VARIANTS)
                how = f"too few rows with feedback ({n} for one variant; at least 2 each)"
        report["difference"] = {
            "metric": metric,
            "challenger_minus_champion": mean,
            "ci95": [lo, hi] if lo is not None else None,
            "method": how,
        }
    return report


def _usable(value: Any, regression: bool) -> bool:
    if regression:
        return type(value) in (int, float) and math.isfinite(value)
    return value is not None


def render(report: dict[str, Any]) -> str:
    lines = [
        "| variant | versions | rows | requests | p50 ms | p99 ms | metric |",
        "|---" * 7 + "|",
    ]
    for v in VARIANTS:
        r = report[v]
        metric = next((f"{k} {r[k]:.4f} (n={r['with_feedback']})" for k in ("accuracy", "mae")
                       if r.get(k) is not None), "")  # fmt: skip
        lines.append(
            f"| {v} | {', '.join(r['versions']) or '-'} | {r['rows']} | {r['requests']} | "
            f"{r['latency_p50_ms']:.2f} | {r['latency_p99_ms']:.2f} | {metric} |"
        )
    reused = sum(report[v]["reused_request_ids"] for v in VARIANTS)
    if reused:
        lines.append(
            f"\n{reused} row(s) reuse a request id already in the log (a client's X-Request-ID): "
            "feedback joins the latest of them."
        )
    if not report["comparable"]:
        lines.append(
            f"\nNot comparable: the champion does {report['champion']['task']} and the "
            f"challenger {report['challenger']['task']}; each variant's rows and latency above."
        )
        return "\n".join(lines)
    if report["agreement"] is not None:
        lines.append(
            f"\nAgreement on {report['paired_rows']} rows both scored: {report['agreement']:.2%}."
        )
    diff = report.get("difference")
    if diff and diff["ci95"] is not None:
        lo, hi = diff["ci95"]
        lines.append(
            f"{diff['metric']}, challenger minus champion: {diff['challenger_minus_champion']:+.4f}"
            f" (95% CI {lo:+.4f} to {hi:+.4f}, {diff['method']})."
        )
    elif diff:
        lines.append(f"{diff['metric']} difference: {diff['method']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", type=Path, required=True, help="SERVING_PREDICTION_LOG")
    parser.add_argument("--feedback", type=Path, help="SERVING_FEEDBACK_LOG")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not log_files(args.log):
        print(f"compare: no prediction log at {args.log}", file=sys.stderr)
        return 1
    if args.feedback and not log_files(args.feedback):
        print(f"compare: no feedback log at {args.feedback}", file=sys.stderr)
        return 1
    try:
        predictions, damage = read_log(args.log, prediction_problem, "prediction log")
        feedback, feedback_damage = (
            read_log(args.feedback, feedback_problem, "feedback log")
            if args.feedback
            else ([], Damage())
        )
    except LogError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 1
    for what, found in (("prediction log", damage), ("feedback log", feedback_damage)):
        if found.lines:
            print(f"compare: {found.message(what)}", file=sys.stderr)
    report = compare(predictions, feedback)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
