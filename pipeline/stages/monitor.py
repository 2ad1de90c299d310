"""``monitor``: served predictions against the training reference; drift, volume, live metric.

Reads the server's prediction log (JSON Lines, one line per predicted row, rotated files
``<log>.1``, ``<log>.2`` ... included) and feedback log for a time window, and compares the
logged inputs and outputs with the training split the model learnt from
(``data/processed/train.parquet``, raw columns; features and target from the data contract).

Writes ``<out>/summary.json`` (for machines: CI, the Prometheus export) and
``<out>/report.html`` (for people). The decision is a flag, not the exit status: the summary's
``retrain`` is true when the share of drifted features reaches ``drift_share``, when the
predictions drifted, or when the live metric is worse than the test metric by more than
``max_metric_degradation``; ``<out>/retrain`` exists exactly then. The stage exits 0 after a
complete report either way, so DVC records it and CI can upload it before deciding; it exits
1 only when it cannot read its inputs.

The statistics are scipy's (Kolmogorov-Smirnov, chi-square, Wasserstein, Jensen-Shannon),
chosen per feature by sample size as Evidently's ``DataDriftPreset`` does by default; see the
README for why not Evidently itself.
"""

from __future__ import annotations

import argparse
import html
import http.client
import math
import numbers
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model_spec.logs import (
    Damage,
    LogError,
    feedback_problem,
    iso_micro,
    log_files,
    prediction_problem,
    read_records,
)
from pipeline.config import MonitorDriftParams, MonitorParams, load_params
from pipeline.contract import Contract, load_contract
from pipeline.errors import PipelineError, cli
from pipeline.io import atomic_path, read_json, read_table, write_json
from pipeline.registry import model_name

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
RETRAIN_FILE = "retrain"
#: The feature name the prediction's drift is reported under.
PREDICTION = "prediction"
#: Metrics the live comparison knows, and whether higher is better.
HIGHER_IS_BETTER = {"accuracy": True, "f1_macro": True, "r2": True, "rmse": False, "mae": False}


# ---------------------------------------------------------------------- reading the logs
def read_jsonl(
    files: Iterable[Path],
    start: float | None,
    end: float,
    *,
    problem=prediction_problem,
    damage: Damage | None = None,
    what: str = "prediction log",
) -> list[dict[str, Any]]:
    """Every record of ``files`` with ``start <= ts < end`` (``start`` None: no lower bound),
    each with ``_ts``, its time as a canonical string. Damaged lines are skipped into
    ``damage`` (:mod:`model_spec.logs`)."""
    low = None if start is None else iso_micro(start)
    high = None if math.isinf(end) else iso_micro(end)
    try:
        records = read_records(files, problem, Damage() if damage is None else damage, what)
    except LogError as exc:
        raise PipelineError(str(exc)) from None
    return [
        r for r in records if (low is None or r["_ts"] >= low) and (high is None or r["_ts"] < high)
    ]


@dataclass(frozen=True)
class Window:
    """Served predictions of one time window, as columns."""

    inputs: pd.DataFrame  # raw feature columns, one row per served prediction
    output: pd.Series  # label (classification) or value (regression)
    keys: pd.DataFrame  # request_id, row, ts, model, version, variant
    shadow_rows: int
    #: Rows of other models (name -> rows) in the log, left out.
    other_models: dict[str, int] = field(default_factory=dict)


def to_window(
    records: list[dict[str, Any]], contract: Contract, task: str, model_name: str | None = None
) -> Window:
    """Turn prediction-log records into columns; shadow (``served: false``) rows are counted
    but not compared, since nobody received them. With ``model_name``, rows of any other
    model (another deployment writing to the same log) are counted and left out."""
    others: dict[str, int] = {}
    if model_name is not None:
        mine = []
        for r in records:
            name = r["model"]["name"]
            if name == model_name:
                mine.append(r)
            else:
                others[name] = others.get(name, 0) + 1
        records = mine
    served = [r for r in records if r.get("served", True)]
    names = contract.feature_names
    inputs = [r.get("inputs") or {} for r in served]
    # A value that is not a scalar (an object, an array) is no value the contract knows: missing.
    frame = pd.DataFrame(
        {name: [_scalar(i.get(name)) for i in inputs] for name in names}, columns=names
    )
    for name in contract.numeric_features:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    key = "label" if task == "classification" else "value"
    outputs = [(r.get("output") or {}).get(key) for r in served]
    output = pd.Series(outputs, dtype="float64" if task == "regression" else object)
    models = [r.get("model") or {} for r in served]
    keys = pd.DataFrame(
        {
            "request_id": [r.get("request_id") for r in served],
            "row": [r.get("row", 0) for r in served],
            "ts": [r["_ts"] for r in served],
            "model": [m.get("name") for m in models],
            "version": [str(m.get("version")) for m in models],
            "variant": [r.get("variant", "champion") for r in served],
        }
    )
    return Window(frame, output, keys, len(records) - len(served), others)


def _scalar(value: Any) -> Any:
    return None if isinstance(value, dict | list) else value


# ---------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Drift:
    """One column's drift verdict. ``statistic`` is what is compared with ``threshold``."""

    column: str
    kind: str  # numeric | categorical
    method: str  # ks | chi2 | wasserstein | jensenshannon
    statistic: float | None
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int
    detail: dict[str, Any] = field(default_factory=dict)


def numeric_drift(column: str, reference: np.ndarray, current: np.ndarray, p: MonitorDriftParams):
    """KS test for small samples, Wasserstein distance in reference standard deviations for
    large ones. Missing values are left out (their share is reported separately)."""
    from scipy import stats

    ref = reference[~np.isnan(reference)]
    cur = current[~np.isnan(current)]
    with np.errstate(over="ignore", invalid="ignore"):  # values near 1e308: inf, then null
        detail = {
            "reference_mean": _round(ref.mean()) if len(ref) else None,
            "current_mean": _round(cur.mean()) if len(cur) else None,
            "reference_std": _round(ref.std()) if len(ref) else None,
            "current_std": _round(cur.std()) if len(cur) else None,
        }
    if not len(ref) or not len(cur):
        return Drift(column, "numeric", "none", None, p.p_value, False, len(ref), len(cur), detail)
    if min(len(ref), len(cur)) <= p.large_sample:
        result = stats.ks_2samp(ref, cur)
        value = float(result.pvalue)
        detail["ks_statistic"] = _round(result.statistic)
        return Drift(
            column, "numeric", "ks", value, p.p_value, value < p.p_value, len(ref), len(cur), detail
        )
    scale = float(ref.std()) or 1.0
    value = float(stats.wasserstein_distance(ref, cur)) / scale
    return Drift(
        column,
        "numeric",
        "wasserstein",
        value,
        p.numeric_distance,
        value > p.numeric_distance,
        len(ref),
        len(cur),
        detail,
    )


def categorical_drift(
    column: str, reference: pd.Series, current: pd.Series, p: MonitorDriftParams
) -> Drift:
    """Chi-square test of the category counts for small samples, Jensen-Shannon distance of
    the shares for large ones. Categories seen on either side count; missing values do not."""
    from scipy import stats
    from scipy.spatial.distance import jensenshannon

    ref_vc = reference.dropna().astype(str).value_counts()
    cur_vc = current.dropna().astype(str).value_counts()
    categories = sorted(set(ref_vc.index.tolist()) | set(cur_vc.index.tolist()))
    ref_counts = ref_vc.reindex(categories, fill_value=0).to_numpy(dtype=float)
    cur_counts = cur_vc.reindex(categories, fill_value=0).to_numpy(dtype=float)
    ref, cur = ref_counts.sum(), cur_counts.sum()
    shown = _shown(categories, ref_counts, cur_counts)
    detail = {
        "reference_share": _shares(categories, ref_counts, shown),
        "current_share": _shares(categories, cur_counts, shown),
    }
    n_ref, n_cur = int(ref), int(cur)
    if not n_ref or not n_cur:
        return Drift(column, "categorical", "none", None, p.p_value, False, n_ref, n_cur, detail)
    if min(n_ref, n_cur) <= p.large_sample:
        if len(categories) < 2:
            value = 1.0
        else:
            value = float(stats.chi2_contingency(np.vstack([ref_counts, cur_counts]))[1])
        drifted = value < p.p_value
        return Drift(column, "categorical", "chi2", value, p.p_value, drifted, n_ref, n_cur, detail)
    value = float(jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum(), 2))
    return Drift(
        column,
        "categorical",
        "jensenshannon",
        value,
        p.categorical_distance,
        value > p.categorical_distance,
        n_ref,
        n_cur,
        detail,
    )


#: Categories named in a report's shares (the most frequent); the rest are summed as OTHER.
MAX_SHOWN_CATEGORIES = 50
#: Characters of a category's name kept in a report (the value itself may be any length).
MAX_CATEGORY_CHARS = 80
OTHER = "(other categories)"


def _shares(categories: list[str], counts: np.ndarray, shown=None) -> dict[str, float]:
    """Each category's share; only those in ``shown`` (default: all) are named, the rest
    are summed under :data:`OTHER`; long names are cut."""
    total = counts.sum() or 1.0
    out: dict[str, float] = {}
    rest = 0.0
    for c, n in zip(categories, counts, strict=True):
        if shown is None or c in shown:
            name = c if len(c) <= MAX_CATEGORY_CHARS else c[: MAX_CATEGORY_CHARS - 1] + "…"
            out[name] = out.get(name, 0.0) + _round(n / total)
        else:
            rest += n
    if rest:
        out[OTHER] = _round(rest / total)
    return out


def _shown(categories: list[str], *counts: np.ndarray) -> set[str] | None:
    """The categories a report names: all, or the most frequent on both sides together."""
    if len(categories) <= MAX_SHOWN_CATEGORIES:
        return None
    weight = sum(c / (c.sum() or 1.0) for c in counts)
    top = np.argsort(-weight, kind="stable")[:MAX_SHOWN_CATEGORIES]
    return {categories[i] for i in top}


def _round(value: float, digits: int = 6) -> float:
    return float(round(float(value), digits))


def live_metric(name: str, actual: pd.Series, predicted: pd.Series) -> float:
    """The named metric of predictions against the actual values people reported.

    Written with numpy rather than scikit-learn's: its label checks on 100,000 string labels
    took 6 s of the monitor's budget. Macro F1 averages over the classes present in either
    series, as scikit-learn's does.
    """
    if name in ("accuracy", "f1_macro"):
        a = actual.astype(str).to_numpy(dtype=object)
        p = predicted.astype(str).to_numpy(dtype=object)
        codes, classes = pd.factorize(np.concatenate([a, p]))
        a_codes, p_codes = codes[: len(a)], codes[len(a) :]
        if name == "accuracy":
            return float(np.mean(a_codes == p_codes))
        k = len(classes)
        tp = np.bincount(a_codes[a_codes == p_codes], minlength=k).astype(float)
        predicted_n = np.bincount(p_codes, minlength=k).astype(float)
        actual_n = np.bincount(a_codes, minlength=k).astype(float)
        denominator = predicted_n + actual_n
        f1 = np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)
        return float(f1.mean())
    a, b = actual.astype(float).to_numpy(), predicted.astype(float).to_numpy()
    if name == "rmse":
        return float(np.sqrt(np.mean((a - b) ** 2)))
    if name == "mae":
        return float(np.mean(np.abs(a - b)))
    if name == "r2":
        total = np.sum((a - a.mean()) ** 2)
        return float(1.0 - np.sum((a - b) ** 2) / total) if total else 0.0
    known = ", ".join(HIGHER_IS_BETTER)
    raise PipelineError(f"monitor.live_metric '{name}' is not one of: {known}.")


# ---------------------------------------------------------------------- the core
def task_of(contract: Contract) -> str:
    """``classification`` or ``regression``: the contract's task (its target's type) decides;
    the live metric is chosen by this name (``monitor.live_metric``)."""
    return "regression" if contract.task.is_regression else "classification"


def monitor_window(
    window: Window,
    reference: pd.DataFrame,
    contract: Contract,
    params: MonitorParams,
    *,
    feedback: list[dict[str, Any]] | None = None,
    test_metrics: dict[str, Any] | None = None,
    start: float | None = None,
    end: float | None = None,
) -> dict[str, Any]:
    """The summary of one window: volume, missing shares, per-feature and prediction drift,
    the live metric when feedback exists, and the ``retrain`` decision with its reasons."""
    task = task_of(contract)
    p = params.drift
    rows = len(window.inputs)
    missing_ref = [c for c in [*contract.feature_names, contract.target] if c not in reference]
    if missing_ref:
        raise PipelineError(f"the reference is missing column(s): {', '.join(missing_ref)}.")
    enough = rows >= params.min_rows

    features: dict[str, dict[str, Any]] = {}
    missing: dict[str, dict[str, Any]] = {}
    for spec in contract.features:
        current = window.inputs[spec.name]
        if spec.is_numeric:
            drift = numeric_drift(
                spec.name,
                reference[spec.name].to_numpy(dtype="float64", na_value=np.nan),
                current.to_numpy(dtype="float64", na_value=np.nan),
                p,
            )
        else:
            drift = categorical_drift(spec.name, reference[spec.name], current, p)
        features[spec.name] = _drift_entry(drift, enough)
        share = float(current.isna().mean()) if rows else 0.0
        missing[spec.name] = {
            "current": _round(share),
            "reference": _round(reference[spec.name].isna().mean()),
            "contract_max": spec.max_missing,
            "over_contract": bool(share > spec.max_missing),
        }

    target = reference[contract.target]
    if task == "classification":
        prediction = categorical_drift(PREDICTION, target, window.output, p)
    else:
        prediction = numeric_drift(
            PREDICTION,
            target.to_numpy(dtype="float64", na_value=np.nan),
            window.output.to_numpy(dtype="float64", na_value=np.nan),
            p,
        )
    prediction_entry = _drift_entry(prediction, enough)
    prediction_entry["reference"] = f"training target '{contract.target}'"

    drifted = [name for name, entry in features.items() if entry["drifted"]]
    share = len(drifted) / len(features)
    live = _live(window, feedback or [], task, params, test_metrics or {})

    reasons = []
    if not enough:
        status = "insufficient_data"
    else:
        status = "ok"
        if share >= p.drift_share:
            reasons.append(
                f"{len(drifted)} of {len(features)} features drifted ({', '.join(drifted)}); "
                f"the limit is a share of {p.drift_share}"
            )
        if prediction_entry["drifted"]:
            reasons.append("the predictions drifted from the training target's distribution")
        if live.get("degraded"):
            reasons.append(
                f"live {live['metric']} {live['value']:.4f} is worse than the test "
                f"{live['test_value']:.4f} by more than {params.max_metric_degradation:.0%}"
            )
        if reasons:
            status = "drift"

    keys = window.keys
    return {
        "task": task,
        "status": status,
        "retrain": bool(reasons),
        "reasons": reasons,
        "window": {
            "start": _iso(start),
            "end": _iso(end),
            "first_prediction": keys["ts"].min() if rows else None,
            "last_prediction": keys["ts"].max() if rows else None,
        },
        "volume": {
            "rows": rows,
            "requests": int(keys["request_id"].nunique()) if rows else 0,
            "shadow_rows": window.shadow_rows,
            "min_rows": params.min_rows,
            "by_model": _counts(keys, ["model", "version", "variant"]),
        },
        "drift": {
            "features": features,
            "drifted_features": drifted,
            "drift_share": _round(share),
            "drift_share_threshold": p.drift_share,
            "dataset_drift": bool(enough and share >= p.drift_share),
            "prediction": prediction_entry,
        },
        "missing": missing,
        "predictions": _prediction_summary(window.output, task),
        "live_metric": live,
        "reference": {"rows": len(reference), "target": contract.target},
    }


def _drift_entry(drift: Drift, enough: bool) -> dict[str, Any]:
    entry = asdict(drift)
    entry.pop("column")
    entry["statistic"] = None if drift.statistic is None else _round(drift.statistic, 8)
    entry["statistic_name"] = {
        "ks": "p_value",
        "chi2": "p_value",
        "wasserstein": "distance",
        "jensenshannon": "distance",
    }.get(drift.method, "none")
    # Too few rows: the numbers are shown, the verdict is not given.
    entry["drifted"] = bool(drift.drifted and enough)
    # One number per feature for dashboards, larger = more drift, 1.0 = at the threshold.
    entry["score"] = _score(drift)
    return entry


def _score(drift: Drift) -> float:
    if drift.statistic is None:
        return 0.0
    if drift.method in ("ks", "chi2"):  # p-values, small is drift: on a log scale, so a
        # p-value of 1e-30 scores 23 and not 5e28 (a dashboard's axis stays readable)
        return _round(math.log10(max(drift.statistic, 1e-300)) / math.log10(drift.threshold), 4)
    return _round(drift.statistic / drift.threshold, 4)


def _live(
    window: Window,
    feedback: list[dict[str, Any]],
    task: str,
    params: MonitorParams,
    test_metrics: dict[str, Any],
) -> dict[str, Any]:
    """Join feedback to served predictions on (request_id, row); the last report of a row wins."""
    name = params.live_metric.get(task)
    if name is None:
        raise PipelineError(f"monitor.live_metric has no entry for '{task}'.")
    if not feedback or not len(window.output):
        return {"metric": name, "rows": 0, "value": None}
    actual = {(f["request_id"], f.get("row", 0)): f["actual"] for f in feedback}
    keys = zip(
        window.keys["request_id"].to_numpy(dtype=object).tolist(),
        window.keys["row"].to_numpy().tolist(),
        strict=True,
    )
    joined = [(i, actual[k]) for i, k in enumerate(keys) if k in actual]
    # A row is scored when both sides are a value of the task: an outcome reported as null,
    # a text outcome for a regression, or a prediction logged as null (a model that overflowed)
    # is counted as unscored, never turned into a NaN metric that hides degradation.
    regression = task == "regression"
    predicted = window.output.tolist()
    scored = [
        (i, a) for i, a in joined if _usable(a, regression) and _usable(predicted[i], regression)
    ]
    unscored = len(joined) - len(scored)
    if not scored:
        return {"metric": name, "rows": 0, "unscored_rows": unscored, "value": None}
    index = [i for i, _ in scored]
    value = live_metric(
        name, pd.Series([a for _, a in scored]), window.output.iloc[index].reset_index(drop=True)
    )
    out: dict[str, Any] = {
        "metric": name, "rows": len(scored), "unscored_rows": unscored, "value": _round(value)
    }  # fmt: skip
    test_value = test_metrics.get(name)
    if test_value is not None:
        higher = HIGHER_IS_BETTER[name]
        worse = (test_value - value) if higher else (value - test_value)
        relative = worse / abs(test_value) if test_value else worse
        out.update(
            test_value=_round(test_value),
            degradation=_round(relative),
            degraded=bool(relative > params.max_metric_degradation),
        )
    return out


def _usable(value: Any, regression: bool) -> bool:
    if value is None:
        return False
    if regression:
        return (
            isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        )
    return not (isinstance(value, float) and math.isnan(value))


def _counts(keys: pd.DataFrame, by: list[str]) -> list[dict[str, Any]]:
    if keys.empty:
        return []
    grouped = keys.groupby(by, dropna=False).size().reset_index(name="rows")
    return [
        {k: (None if pd.isna(v) else v) for k, v in r.items()} for r in grouped.to_dict("records")
    ]


def _prediction_summary(output: pd.Series, task: str) -> dict[str, Any]:
    if task == "classification":
        categories, counts = _value_counts(output)
        return {"share": _shares(categories, counts, _shown(categories, counts))}
    values = output.dropna().to_numpy(dtype=float)
    if not len(values):
        return {}
    q = np.quantile(values, [0.05, 0.5, 0.95])
    return {"mean": _round(values.mean()), "p05": _round(q[0]), "p50": _round(q[1]),
            "p95": _round(q[2])}  # fmt: skip


def _value_counts(series: pd.Series) -> tuple[list[str], np.ndarray]:
    counts = series.dropna().astype(str).value_counts().sort_index()
    return list(counts.index), counts.to_numpy(dtype=float)


def _iso(ts: float | None) -> str | None:
    if ts is None or (isinstance(ts, float) and math.isnan(ts)):
        return None
    return datetime.fromtimestamp(float(ts), UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------- the HTML report
def render_report(
    summary: dict[str, Any], window: Window, reference: pd.DataFrame, contract: Contract
) -> str:
    """A self-contained page: the verdict, volume, then one row per feature with both
    distributions drawn side by side (inline SVG, no scripts, no network)."""
    e = html.escape
    drift = summary["drift"]
    verdict = {
        "ok": ("No drift", "#1a7f37"),
        "drift": ("Drift: retraining recommended", "#cf222e"),
        "insufficient_data": ("Too few predictions for a verdict", "#9a6700"),
    }[summary["status"]]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Monitoring report</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#1f2328}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #d0d7de;"
        "padding:4px 8px;text-align:left;vertical-align:middle}th{background:#f6f8fa}"
        ".bad{color:#cf222e;font-weight:600}.good{color:#1a7f37}</style></head><body>",
        "<h1>Monitoring report</h1>",
        f"<p style='font-size:1.3em;color:{verdict[1]}'><b>{e(verdict[0])}</b></p>",
    ]
    if summary["reasons"]:
        parts.append("<ul>" + "".join(f"<li>{e(r)}</li>" for r in summary["reasons"]) + "</ul>")
    w, v = summary["window"], summary["volume"]
    parts.append(
        f"<p>Window {e(str(w['start']))} to {e(str(w['end']))}: <b>{v['rows']}</b> served rows "
        f"in {v['requests']} requests ({v['shadow_rows']} shadow rows not compared), against "
        f"{summary['reference']['rows']} training rows. Task: {e(summary['task'])}.</p>"
    )
    if v["by_model"]:
        parts.append(_table(["model", "version", "variant", "rows"], v["by_model"]))
    parts.append(
        f"<h2>Features: {len(drift['drifted_features'])} of {len(drift['features'])} drifted "
        f"(share {drift['drift_share']:.2f}, limit {drift['drift_share_threshold']})</h2>"
        "<p>For up to the large-sample size the statistic is a test's p-value (drift when "
        "below the threshold); above it, a distance (drift when above). Grey: training, "
        "blue: this window.</p>"
    )
    head = ["column", "method", "statistic", "threshold", "drifted", "missing", "distribution"]
    rows_html = []
    columns = [(s.name, s.is_numeric, reference[s.name], window.inputs[s.name])
               for s in contract.features]  # fmt: skip
    target = reference[contract.target]
    columns.append((PREDICTION, task_of(contract) == "regression", target, window.output))
    for name, numeric, ref, cur in columns:
        entry = drift["prediction"] if name == PREDICTION else drift["features"][name]
        miss = summary["missing"].get(name)
        stat = "-" if entry["statistic"] is None else f"{entry['statistic']:.4g}"
        flag = (
            "<span class='bad'>yes</span>" if entry["drifted"] else "<span class='good'>no</span>"
        )
        rows_html.append(
            f"<tr><td>{e(name)}</td><td>{e(entry['method'])}</td><td>{stat} "
            f"({e(entry['statistic_name'])})</td><td>{entry['threshold']}</td><td>{flag}</td>"
            f"<td>{'-' if miss is None else format(miss['current'], '.1%')}</td>"
            f"<td>{_svg(ref, cur, numeric)}</td></tr>"
        )
    parts.append(
        "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows_html)
        + "</table>"
    )  # fmt: skip
    live = summary["live_metric"]
    parts.append("<h2>Live metric (from feedback)</h2>")
    if live.get("value") is None:
        parts.append("<p>No feedback joined to this window's predictions.</p>")
    else:
        test = live.get("test_value")
        parts.append(
            f"<p>{e(live['metric'])} on {live['rows']} rows with feedback: "
            f"<b>{live['value']:.4f}</b>"
            + ("" if test is None else f" (test split: {test:.4f})")
            + "</p>"
        )
    parts.append("</body></html>\n")
    return "".join(parts)


def _table(head: list[str], rows: list[dict[str, Any]]) -> str:
    e = html.escape
    body = "".join(
        "<tr>" + "".join(f"<td>{e(str(r.get(h)))}</td>" for h in head) + "</tr>" for r in rows
    )
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + body + "</table>"


def _svg(reference: pd.Series, current: pd.Series, numeric: bool) -> str:
    """Two bar series (reference grey, current blue) as shares: histogram or category bars."""
    if numeric:
        ref = reference.to_numpy(dtype="float64", na_value=np.nan)
        cur = current.to_numpy(dtype="float64", na_value=np.nan)
        ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
        both = np.concatenate([ref, cur])
        if not len(both):
            return ""
        edges = np.histogram_bin_edges(both, bins=20)
        a = np.histogram(ref, edges)[0].astype(float)
        b = np.histogram(cur, edges)[0].astype(float)
        labels = [f"{edges[0]:.4g}", f"{edges[-1]:.4g}"]
    else:
        a = reference.dropna().astype(str).value_counts()
        b = current.dropna().astype(str).value_counts()
        cats = sorted(set(a.index.tolist()) | set(b.index.tolist()))
        a, b = a.reindex(cats, fill_value=0), b.reindex(cats, fill_value=0)
        a, b = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
        labels = cats
    a = a / (a.sum() or 1.0)
    b = b / (b.sum() or 1.0)
    width, height, n = 320, 80, len(a)
    top = max(a.max(initial=0), b.max(initial=0)) or 1.0
    step = width / max(n, 1)
    bars = []
    for i in range(n):
        for j, (share, colour) in enumerate(((a[i], "#8c959f"), (b[i], "#0969da"))):
            h = share / top * (height - 14)
            bars.append(
                f"<rect x='{i * step + j * step / 2:.1f}' y='{height - 14 - h:.1f}' "
                f"width='{max(step / 2 - 1, 1):.1f}' height='{h:.1f}' fill='{colour}'/>"
            )
    if numeric:
        text = (
            f"<text x='0' y='{height - 2}' font-size='10'>{html.escape(labels[0])}</text>"
            f"<text x='{width}' y='{height - 2}' font-size='10' text-anchor='end'>"
            f"{html.escape(labels[1])}</text>"
        )
    else:
        text = "".join(
            f"<text x='{(i + 0.5) * step:.1f}' y='{height - 2}' font-size='10' "
            f"text-anchor='middle'>{html.escape(c[:12])}</text>"
            for i, c in enumerate(labels)
        )
    return f"<svg width='{width}' height='{height}'>{''.join(bars)}{text}</svg>"


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity as None: JSON has neither (Python writes ``NaN``,
    which strict parsers, browsers and orjson refuse)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


# ---------------------------------------------------------------------- Prometheus export
def push_metrics(
    summary: dict[str, Any], gateway: str, job: str = "monitor", summary_time: float = 0.0
) -> None:
    """Replace this job's group on a Prometheus pushgateway with the summary's numbers.

    The names are the ones the alert rules and the dashboard use (README, Monitoring)."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    drift = summary["drift"]
    flag = Gauge(
        "monitor_feature_drift", "1 when the feature drifted.", ["feature"], registry=registry
    )
    score = Gauge(
        "monitor_feature_drift_score",
        "Drift score per feature; 1.0 is the threshold, larger is more drift.",
        ["feature"],
        registry=registry,
    )
    for name, entry in drift["features"].items():
        flag.labels(name).set(1.0 if entry["drifted"] else 0.0)
        score.labels(name).set(entry["score"])
    Gauge("monitor_drift_share", "Share of drifted features.", registry=registry).set(
        drift["drift_share"]
    )
    Gauge("monitor_prediction_drift", "1 when the predictions drifted.", registry=registry).set(
        1.0 if drift["prediction"]["drifted"] else 0.0
    )
    Gauge("monitor_rows", "Served rows in the window.", registry=registry).set(
        summary["volume"]["rows"]
    )
    # The summary's own time, not the push's: pushing an old summary again must not look like
    # a fresh run to the MonitorNotRunning alert.
    generated = summary.get("generated_at")
    Gauge(
        "monitor_last_run_timestamp_seconds", "When the monitor last finished.", registry=registry
    ).set(_parse_iso(generated) if generated else summary_time)
    try:
        push_to_gateway(gateway, job=job, registry=registry, timeout=10)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise PipelineError(f"could not push to the pushgateway at {gateway}: {exc}") from None


def _parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------- main
def _time_arg(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise PipelineError(f"--{name} is {value!r}, not an ISO 8601 time.") from None


@cli("monitor")
def main(argv: list[str] | None = None) -> None:
    """``monitor`` (the stage), ``monitor push`` (summary -> pushgateway) and ``monitor fetch``
    (copy the team's logs from an fsspec URI into ``monitor.log_dir``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["push"]:
        return _main_push(argv[1:])
    if argv[:1] == ["fetch"]:
        return _main_fetch(argv[1:])
    return _main_monitor(argv)


def _main_monitor(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="monitor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", required=True)
    parser.add_argument("--predictions", help="prediction log (default: monitor.prediction_log)")
    parser.add_argument("--feedback", help="feedback log (default: monitor.feedback_log)")
    parser.add_argument("--reference", help="training split (default: monitor.reference)")
    parser.add_argument("--test-metrics", help="test metrics (default: monitor.test_metrics)")
    parser.add_argument("--out", help="report directory (default: monitor.out)")
    parser.add_argument("--start", help="window start, ISO 8601 (default: end - window_hours)")
    parser.add_argument("--end", help="window end, ISO 8601 (default: now)")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    m = params.monitor
    contract = load_contract(params.data.contract)
    now = time.time()
    end = _time_arg(args.end, "end") or now
    start = _time_arg(args.start, "start")
    if start is None and m.window_hours > 0:
        start = (datetime.fromtimestamp(end, UTC) - timedelta(hours=m.window_hours)).timestamp()
    if start is not None and start >= end:
        raise PipelineError(
            f"the window starts ({_iso(start)}) at or after it ends ({_iso(end)}); "
            "--start must be before --end."
        )

    log_path = Path(args.predictions or m.prediction_log)
    files = log_files(log_path)
    if not files:
        raise PipelineError(
            f"no prediction log at '{log_path}' (nor rotated {log_path.name}.1 ...); point "
            "monitor.prediction_log or --predictions at the file SERVING_PREDICTION_LOG names."
        )
    reference_path = Path(args.reference or m.reference)
    if not reference_path.exists():
        raise PipelineError(
            f"the training reference '{reference_path}' does not exist; run the pipeline "
            "(make run, or dvc pull) first."
        )
    task = task_of(contract)
    damage = Damage()
    records = read_jsonl(files, start, end, damage=damage)
    name = model_name(params, contract.task)
    window = to_window(records, contract, task, name)
    feedback_damage = Damage()
    feedback = read_jsonl(
        log_files(args.feedback or m.feedback_log), None, math.inf,
        problem=feedback_problem, damage=feedback_damage, what="feedback log",
    )  # fmt: skip
    for what, found in (("prediction log", damage), ("feedback log", feedback_damage)):
        if found.lines:
            print(f"monitor: {found.message(what)}", file=sys.stderr)
    if window.other_models:
        others = ", ".join(f"{n} ({c} rows)" for n, c in sorted(window.other_models.items()))
        print(
            f"monitor: left out rows of other models: {others}; this monitor reads "
            f"'{name}' (registry.model_name).",
            file=sys.stderr,
        )
        if not len(window.inputs) and not window.shadow_rows:
            raise PipelineError(
                f"the window holds no row of '{name}', only of "
                f"{others}: point monitor.prediction_log at this model's log, or set "
                "registry.model_name to the model that wrote it."
            )
    metrics_path = Path(args.test_metrics or m.test_metrics)
    test_metrics = read_json(metrics_path) if metrics_path.exists() else {}
    reference = read_table(reference_path)

    summary = monitor_window(
        window, reference, contract, m,
        feedback=feedback, test_metrics=test_metrics, start=start, end=end,
    )  # fmt: skip
    summary["generated_at"] = _iso(now)
    summary["inputs"] = {
        "prediction_logs": [str(f) for f in files],
        "reference": str(reference_path),
        "test_metrics": str(metrics_path) if test_metrics else None,
        "damaged_lines": {
            "prediction_log": damage.as_dict(),
            "feedback_log": feedback_damage.as_dict(),
        },
    }
    summary["volume"]["other_models"] = dict(sorted(window.other_models.items()))
    out = Path(args.out or m.out)
    report = render_report(summary, window, reference, contract)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_json(tmp / SUMMARY_FILE, finite(summary))
        (tmp / REPORT_FILE).write_text(report)
        if summary["retrain"]:
            (tmp / RETRAIN_FILE).write_text("\n".join(summary["reasons"]) + "\n")
    drifted = ", ".join(summary["drift"]["drifted_features"]) or "none"
    print(
        f"monitor: {summary['volume']['rows']} rows, status {summary['status']}, drifted "
        f"features: {drifted}, prediction drift: {summary['drift']['prediction']['drifted']}, "
        f"retrain: {summary['retrain']} -> {out}/"
    )


def _main_push(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="monitor push", description=push_metrics.__doc__)
    parser.add_argument("--summary", required=True, help="the monitor's summary.json")
    parser.add_argument("--pushgateway", required=True, help="e.g. http://127.0.0.1:9091")
    parser.add_argument("--job", default="monitor", help="the pushgateway job label")
    args = parser.parse_args(argv)
    path = Path(args.summary)
    if not path.exists():
        raise PipelineError(f"'{path}' does not exist; run `make monitor` first.")
    push_metrics(read_json(path), args.pushgateway, args.job, path.stat().st_mtime)
    print(f"monitor push: {path} -> {args.pushgateway} (job {args.job})")


def fetch_logs(uri: str, dest: Path) -> list[Path]:
    """Copy the prediction and feedback logs (rotated ones too) under ``uri`` to ``dest``."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(uri)
        names = fs.ls(root, detail=False)
    except FileNotFoundError:
        raise PipelineError(f"PREDICTION_LOG_URI '{uri}' does not exist.") from None
    except ImportError as exc:  # fsspec names the package this scheme needs
        raise PipelineError(f"PREDICTION_LOG_URI '{uri}': {exc}") from None
    except Exception as exc:  # credentials, network, a scheme fsspec does not know ...
        raise PipelineError(
            f"could not list PREDICTION_LOG_URI '{uri}': {type(exc).__name__}: {exc}"
        ) from None
    wanted = [n for n in names if ".jsonl" in Path(n).name]
    if not wanted:
        raise PipelineError(f"'{uri}' holds no .jsonl logs.")
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in sorted(wanted):
        target = dest / Path(name).name
        partial = target.with_name(target.name + ".part")  # no half-copied log is read
        try:
            fs.get(name, str(partial))
            partial.replace(target)
        except Exception as exc:
            partial.unlink(missing_ok=True)
            raise PipelineError(
                f"could not copy '{name}' from PREDICTION_LOG_URI: {type(exc).__name__}: {exc}"
            ) from None
        copied.append(target)
    return copied


def _main_fetch(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="monitor fetch", description=fetch_logs.__doc__)
    parser.add_argument("--uri", required=True, help="a directory: path, s3://..., gs://...")
    parser.add_argument("--dest", required=True, help="monitor.log_dir")
    args = parser.parse_args(argv)
    copied = fetch_logs(args.uri, Path(args.dest))
    print(f"monitor fetch: {len(copied)} file(s) from {args.uri} -> {args.dest}/")


if __name__ == "__main__":
    raise SystemExit(main())
