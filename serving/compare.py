"""Champion against challenger, from the prediction log (and the feedback log, if any).

    python -m serving.compare --log predictions.jsonl [--feedback feedback.jsonl]

Reads the log and its rotated files (``<file>.N`` ... ``<file>.1``, ``<file>``) and reports, per
variant, rows, requests and request latency (p50, p99, from ``latency_ms``); where both
variants scored the same row (``SERVING_ROLLOUT=shadow``), their agreement (same label, or
values within 1% for regression); and, with feedback, each variant's metric on the rows
whose outcome is known (accuracy, or mean absolute error for regression) and the
challenger-minus-champion difference with a 95% confidence interval (paired when the
variants scored the same rows, else two independent samples). Standard library only.
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

VARIANTS = ("champion", "challenger")
Z95 = 1.959964


def log_files(path: Path) -> list[Path]:
    """The rotated files oldest first, then the live one."""
    rotated = sorted(
        (p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    return [*rotated, *([path] if path.exists() else [])]


def read_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    for file in log_files(path):
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


def _percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))] if data else math.nan


def _mean_ci(values: list[float]) -> tuple[float, float, float]:
    mean = statistics.fmean(values)
    half = Z95 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, mean - half, mean + half


def compare(predictions: list[dict[str, Any]], feedback: list[dict[str, Any]]) -> dict[str, Any]:
    rows: dict[str, dict[tuple[str, int], dict[str, Any]]] = {v: {} for v in VARIANTS}
    latency: dict[str, dict[str, float]] = {v: {} for v in VARIANTS}
    versions: dict[str, set[str]] = defaultdict(set)
    for r in predictions:
        v = r.get("variant", "champion")
        if v not in rows:
            continue
        rows[v][(r["request_id"], r["row"])] = r["output"]
        latency[v][r["request_id"]] = r["latency_ms"]
        versions[v].add(str(r["model"]["version"]))
    regression = any("value" in o for v in VARIANTS for o in rows[v].values())
    report: dict[str, Any] = {"task": "regression" if regression else "classification"}
    for v in VARIANTS:
        ms = list(latency[v].values())
        report[v] = {
            "rows": len(rows[v]),
            "requests": len(ms),
            "versions": sorted(versions[v]),
            "latency_p50_ms": _percentile(ms, 0.5),
            "latency_p99_ms": _percentile(ms, 0.99),
        }
    both = rows["champion"].keys() & rows["challenger"].keys()

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
    actual = {(f["request_id"], f.get("row", 0)): f["actual"] for f in feedback}
    if actual:

        def score(output: dict[str, Any], truth: Any) -> float:
            if regression:
                return abs(output["value"] - float(truth))  # absolute error
            return float(output["label"] == truth)  # correct

        scored = {
            v: {k: score(o, actual[k]) for k, o in rows[v].items() if k in actual} for v in VARIANTS
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
            how = "too few rows with feedback"
        report["difference"] = {
            "metric": metric,
            "challenger_minus_champion": mean,
            "ci95": [lo, hi] if lo is not None else None,
            "method": how,
        }
    return report


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
    try:
        predictions = read_lines(args.log)
        feedback = read_lines(args.feedback) if args.feedback else []
        report = compare(predictions, feedback)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"compare: {args.log} is not a prediction log this reads: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
