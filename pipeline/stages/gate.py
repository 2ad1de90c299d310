"""``gate``: decide whether the exported model may go further, and say why.

Every check is reported with its value, its threshold and whether it passed:

- ``floor.<metric>``: the test metrics in ``metrics.json`` against ``gate.min``: at least the
  bound for a higher-is-better metric, at most the bound for a lower-is-better one (``log_loss``);
- ``parity``: the export stage's parity report passed, for this very export (its run id);
- ``validation``: the data validation passed;
- ``leakage``: no feature that validation found to predict the target alone almost perfectly,
  unless the contract allows it (no ``leakage`` section in the validation result: passes, and
  says it did not run);
- ``golden_inputs``: every golden row passes the model's own input rules, so the server can
  replay its golden file (no null where an input is not nullable, numbers within range, listed
  categories; the one synthetic unseen-category row is exempt from the category rule);
- ``vs_champion.<metric>``: when ``registry.model_name`` has a ``@champion``, the candidate may be
  worse than the champion by at most ``gate.max_regression[metric]``. Both models are scored the
  same way on the *current* test split: each one's registered/exported ONNX graph, run by ONNX
  Runtime on the raw columns its own descriptor names, so the comparison is like for like even
  when the champion was trained on older data. The champion is compared only when it is
  comparable (same task, same inputs by name and kind, same classes); otherwise the report says
  in one line why not and that ``registry.model_name`` should change. No champion: absolute
  checks only, and the report says so.

``gate.json`` and ``gate.md`` are written whatever the outcome (CI uploads them), logged with a
``gate_passed`` metric and tag to the pipeline's MLflow run (``lineage.run_id`` of the
descriptor), and a failed gate exits 1 naming each failed check with its value and threshold.

Why not ``mlflow.models.MetricThreshold`` / ``mlflow.validate_evaluation_results`` (3.17): its
baseline comparison is ``min_absolute_change``, which must be *positive* (the candidate must beat
the champion by at least that much); a tolerance ("may be worse by at most 0.01") cannot be
expressed except by folding ``champion - margin`` into ``threshold`` ourselves, at which point
MLflow compares two numbers we already have. It also reports only by raising one exception with a
joined message, while this report lists every check, passed or not. The direction rule is the
same as MLflow's (``>=`` when greater is better, else ``<=``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model_spec.descriptor import (
    DESCRIPTOR_FILE,
    GOLDEN_FILE,
    PREDICTION,
    PROBABILITIES,
    DescriptorError,
    ModelDescriptor,
    comparability,
)
from model_spec.feed import FeedError, build_feed
from model_spec.task import Task
from pipeline.config import GateParams, load_params
from pipeline.errors import PipelineError, cli
from pipeline.estimators import ESTIMATORS
from pipeline.frames import category_text
from pipeline.io import (
    atomic_path,
    file_sha256,
    invalidate_gate_report,
    read_json,
    read_table,
    write_json,
)
from pipeline.metrics import baseline_output, compute_metrics, higher_is_better, metric_names
from pipeline.registry import EXPORT_ARTIFACT_DIR, champion_of, default_model_name, model_name

#: The gate's params blocks: each maps a task to ``{metric: number}``.
GATE_BLOCKS = ("min", "max_regression", "baseline_margin")


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "n/a"
    if isinstance(value, float | int):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


@dataclass(frozen=True)
class Check:
    """One line of the gate report."""

    name: str
    passed: bool
    value: float | bool | None
    threshold: float | bool | None
    op: str  # how value is compared with threshold: ">=", "<=" or "=="
    detail: str  # one sentence for a person


@dataclass(frozen=True)
class Champion:
    """The current ``@champion`` version, scored on the current test split (or why not)."""

    version: str
    run_id: str | None
    metrics: dict[str, float] | None = None
    error: str | None = None
    #: Why the champion was not compared (other task, inputs or classes): it is a model of
    #: other data. None when it is comparable.
    skipped: str | None = None


@dataclass
class GateReport:
    passed: bool
    model_name: str
    checks: list[Check]
    candidate: dict[str, Any]
    champion: dict[str, Any] | None
    note: str
    failed: list[str] = field(default_factory=list)
    #: Said with the verdict, pass or fail (a test split too small to judge on), else "".
    warning: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "model_name": self.model_name,
            "compared_with_champion": self.champion is not None
            and not self.champion.get("skipped"),
            "champion_version": self.champion["version"] if self.champion else None,
            "note": self.note,
            "checks": [asdict(c) for c in self.checks],
            "failed": self.failed,
            "warning": self.warning,
            "candidate": self.candidate,
            "champion": self.champion,
        }


# ---------------------------------------------------------------------------- the checks
def check_gate_params(gate: GateParams) -> None:
    """Fail early, naming the key, when a gate block names an unknown task or metric, or holds
    something other than a number in its range."""
    for block in GATE_BLOCKS:
        per_task = getattr(gate, block)
        if not isinstance(per_task, Mapping):
            raise PipelineError(f"params: gate.{block} must map a task to metrics.")
        for task_name, bounds in per_task.items():
            try:
                task = Task.parse(str(task_name))
            except ValueError as exc:
                raise PipelineError(f"params: gate.{block}: {exc}.") from None
            known = metric_names(task)
            for metric, bound in (bounds or {}).items():
                where = f"gate.{block}.{task_name}.{metric}"
                if metric not in known:
                    raise PipelineError(
                        f"params: {where}: unknown metric '{metric}' for a {task.value} task; "
                        f"known: {', '.join(known)}."
                    )
                if not isinstance(bound, int | float) or isinstance(bound, bool):
                    raise PipelineError(f"params: {where} must be a number, not {bound!r}.")
                if block == "max_regression" and bound < 0:
                    raise PipelineError(f"params: {where} must be >= 0.")
                if block == "baseline_margin" and not 0 <= bound < 1:
                    raise PipelineError(f"params: {where} must be in [0, 1).")


def task_block(gate: GateParams, block: str, task: Task) -> dict[str, float]:
    """``gate.<block>.<task>`` (empty when the task has no entry)."""
    return dict((getattr(gate, block) or {}).get(task.value) or {})


def floor_checks(
    metrics: Mapping[str, float], minimums: Mapping[str, float], task: Task = Task.MULTICLASS
) -> list[Check]:
    """``gate.min.<task>``: absolute bounds, in each metric's good direction (a floor for a
    higher-is-better metric, a ceiling for ``log_loss``, ``rmse``, ``mae``, ...)."""
    checks = []
    for metric, bound in minimums.items():
        name = f"floor.{metric}"
        higher = higher_is_better(metric)
        op = ">=" if higher else "<="
        value = metrics.get(metric)
        if value is None:
            checks.append(
                Check(name, False, None, bound, op, f"{metric} is missing from the test metrics.")
            )
            continue
        passed = value >= bound if higher else value <= bound
        if passed:
            detail = f"{metric} {_fmt(value)} {op} {_fmt(bound)}."
        elif not math.isfinite(value):  # no bound can fix this: say what can
            detail = (
                f"{metric} is undefined on the test split ({_fmt(value)}): its rows hold a "
                "single class or a constant target, so no bound applies. Give the test split "
                "more rows (preprocess.test_size) or use data with more distinct inputs."
            )
        else:
            side = "below the minimum" if higher else "above the maximum"
            detail = (
                f"{metric} is {_fmt(value)}, {side} {_fmt(bound)} (gate.min.{task.value}.{metric} "
                "in params.yaml: set the bounds your data needs)."
            )
        checks.append(Check(name, passed, float(value), float(bound), op, detail))
    return checks


def baseline_checks(
    metrics: Mapping[str, float],
    baseline: Mapping[str, float],
    margins: Mapping[str, float],
    estimator: str = "",
    leaf: str = "",
) -> list[Check]:
    """The candidate must beat a model that ignores its inputs (the training prior or mean,
    ``pipeline.metrics.baseline_output``) on the test split, by ``margins[metric]``: a share of
    the gap between the baseline and a perfect score. Higher-is-better metrics (perfect 1):
    at least ``b + m * (1 - b)``; lower-is-better ones (perfect 0): at most ``b * (1 - m)``. So
    0.1 asks for a tenth of the way from "knows nothing" to "perfect", on any data.

    ``estimator`` (its name) and ``leaf`` (its least-rows-per-leaf setting, as
    ``train.lightgbm.min_child_samples is 20``) make the hints of a failure name its settings."""
    checks, improved, tied = [], set(), set()
    for metric, margin in margins.items():
        name = f"vs_baseline.{metric}"
        higher = higher_is_better(metric)
        op = ">=" if higher else "<="
        value, base = metrics.get(metric), baseline.get(metric)
        if value is None or base is None or not np.isfinite(value) or not np.isfinite(base):
            checks.append(
                Check(
                    name,
                    False,
                    value,
                    None,
                    op,
                    f"{metric} cannot be compared with the baseline (candidate {_fmt(value)}, "
                    f"baseline {_fmt(base)}); pick another metric in gate.baseline_margin.",
                )
            )
            continue
        required = base + margin * (1.0 - base) if higher else base * (1.0 - margin)
        passed = value >= required if higher else value <= required
        kind = "beats" if passed else "does not beat"
        detail = (
            f"{metric} {_fmt(value)} {kind} the trivial baseline's {_fmt(base)} by the margin "
            f"{_fmt(margin)} of the gap to perfect (needs {op} {_fmt(required)})."
        )
        checks.append(Check(name, passed, float(value), float(required), op, detail))
        if np.isclose(value, base, rtol=TIE_RTOL, atol=TIE_RTOL):
            tied.add(name)  # a model that outputs the training prior or mean for every row
        elif not passed and (value > base if higher else value < base):
            improved.add(name)
    # Where the labels or the ranking beat the baseline but the probabilities do not, the model
    # has learnt something: its probabilities are too sure (exact 0 or 1 from deep trees,
    # min_samples_leaf: 1). "Learnt little" sent the user to the features instead.
    learnt = any(c.passed and _metric(c) not in _PROBABILITY_METRICS for c in checks)
    # The reverse: the probabilities beat it but the labels do not (imbalanced classes).
    ranked = any(c.passed and _metric(c) in _PROBABILITY_METRICS + _RANKING_METRICS for c in checks)
    constant = bool(tied) and tied == {c.name for c in checks if c.threshold is not None}
    out, hinted = [], False
    for c in checks:
        if c.passed or c.threshold is None:
            out.append(c)
            continue
        if constant:
            hint = _constant_hint(leaf)
        else:
            hint = _hint(c, learnt, ranked, c.name in improved, estimator)
        if hint.startswith(_ONCE) and hinted:  # "learnt little" once, not once per metric
            out.append(c)
            continue
        hinted = hinted or hint.startswith(_ONCE)
        out.append(replace(c, detail=c.detail + hint))
    return out


#: A metric this close to the baseline's (relative, or absolute near 0) is the baseline's: the
#: model gives every row the same output. Real improvements are orders of magnitude larger.
TIE_RTOL = 1e-6


def leaf_setting(train: Any, estimator: str) -> str:
    """``'train.lightgbm.min_child_samples is 20'`` for an estimator with a ``leaf_param``
    above 1, else ``''``."""
    entry = ESTIMATORS.get(estimator)
    name = entry.leaf_param if entry is not None else None
    try:
        value = getattr(train.blocks[estimator], name) if name else None
    except (KeyError, AttributeError):
        return ""
    if not isinstance(value, int | float) or value <= 1:
        return ""
    return f"train.{estimator}.{name} is {value}"


def _constant_hint(leaf: str) -> str:
    settings = (
        f"{leaf}, so a split needs twice that many training rows: lower it in params.yaml"
        if leaf
        else "check the features and the target"
    )
    return (
        f"{_ONCE} nothing: every metric equals the trivial baseline's, as when it gives every "
        "row the same output (no split was allowed, or no feature varies). On a small table "
        f"the estimator's least rows per leaf can forbid every split; {settings}, or add rows."
    )


#: Metrics of the probabilities themselves: a model can rank and label well and still fail them.
_PROBABILITY_METRICS = ("log_loss", "brier")


def _metric(check: Check) -> str:
    return check.name.removeprefix("vs_baseline.")


#: Metrics of the ranking: a model can rank well and still label every row the majority class.
_RANKING_METRICS = ("roc_auc", "roc_auc_ovr", "average_precision")

#: The start of the hints given once per gate report, not once per failed metric.
_ONCE = " The model has learnt"


def _hint(check: Check, learnt: bool, ranked: bool, improved: bool, estimator: str = "") -> str:
    """What a failed baseline check suggests: ``learnt``, whether a label or ranking metric
    beat the baseline; ``ranked``, whether a probability or ranking metric did; ``improved``,
    whether this metric is better than the baseline's, only not by the margin."""
    metric = _metric(check)
    if learnt and metric in _PROBABILITY_METRICS and not improved:
        return (
            f" Its labels or ranking beat the baseline, but {metric} does not: the "
            "probabilities are overconfident (near 0 or 1 where the model is wrong; deep trees "
            "with min_samples_leaf: 1 do that). Regularise the estimator in "
            + (
                f"train.{estimator} ({entry.regularisers})"
                if (entry := ESTIMATORS.get(estimator)) is not None and entry.regularisers
                else "train.<estimator> (for trees min_samples_leaf, max_depth)"
            )
            + ", or lower gate.baseline_margin."
        )
    if improved:
        return (
            f" The model has learnt something ({metric} is better than the baseline's), but "
            "less than the margin asks: the features carry a weak signal. Add more informative "
            "features, or lower gate.baseline_margin if this is as good as the problem allows."
        )
    if ranked and metric not in _PROBABILITY_METRICS + _RANKING_METRICS:
        return (
            f" Its probabilities or ranking beat the baseline, but its labels ({metric}) do "
            "not: with imbalanced classes the most likely class is nearly always the majority "
            "one. Gate on log_loss or roc_auc in gate.baseline_margin instead, or balance the "
            "classes in the data."
        )
    beyond = "the training mean" if metric in metric_names(Task.REGRESSION) else "the class shares"
    return (
        f" The model has learnt little beyond {beyond}: check the features and the target, or "
        "lower gate.baseline_margin."
    )


def status_checks(parity: Mapping[str, Any], validation: Mapping[str, Any]) -> list[Check]:
    """The export parity check and the data validation must both have passed."""
    diff, tolerance = parity.get("max_abs_diff"), parity.get("tolerance")
    parity_ok = parity.get("passed") is True
    if "passed" not in parity:
        parity_detail = "the parity report has no 'passed' field."
    elif parity_ok:
        parity_detail = "native, ONNX (and SavedModel) outputs agree."
    elif parity.get("error"):
        parity_detail = f"export failed: {str(parity['error']).rstrip('.')}."
    else:
        parity_detail = (
            f"export parity failed: max abs difference {_fmt(diff)} > tolerance {_fmt(tolerance)}."
            if diff is not None and tolerance is not None
            else "export parity failed."
        )
    validation_ok = validation.get("success") is True
    validation_detail = (
        "the data validation passed."
        if validation_ok
        else "the data validation failed (see reports/validation)."
    )
    return [
        Check(
            "parity",
            parity_ok,
            None if diff is None else float(diff),
            None if tolerance is None else float(tolerance),
            "<=",
            parity_detail,
        ),
        Check("validation", validation_ok, validation_ok, True, "==", validation_detail),
    ]


def champion_checks(
    candidate: Mapping[str, float], champion: Champion, max_regression: Mapping[str, float]
) -> list[Check]:
    """The candidate may be worse than the champion by at most ``max_regression[metric]``."""
    if champion.metrics is None:
        return [
            Check(
                "vs_champion",
                False,
                None,
                None,
                "==",
                f"the champion (version {champion.version}) could not be scored on the current "
                f"test split: {champion.error}",
            )
        ]
    checks = []
    for metric, margin in max_regression.items():
        name = f"vs_champion.{metric}"
        value, best = candidate.get(metric), champion.metrics.get(metric)
        higher = higher_is_better(metric)
        op = ">=" if higher else "<="
        if value is None or best is None:
            whose = "candidate" if value is None else "champion"
            checks.append(Check(name, False, value, None, op, f"{metric} missing for the {whose}."))
            continue
        threshold = best - margin if higher else best + margin
        passed = value >= threshold if higher else value <= threshold
        worse = "below" if higher else "above"
        if passed:
            detail = (
                f"{metric} {_fmt(value)} vs champion v{champion.version} {_fmt(best)} "
                f"(allowed regression {_fmt(margin)})."
            )
        else:
            detail = (
                f"{metric} is {_fmt(value)}, more than {_fmt(margin)} {worse} the champion's "
                f"{_fmt(best)} (version {champion.version}): threshold {_fmt(threshold)}."
            )
        checks.append(Check(name, passed, float(value), float(threshold), op, detail))
    return checks


def golden_checks(descriptor: ModelDescriptor, golden: Mapping[str, Any]) -> list[Check]:
    """The golden rows must pass the model's own input rules, or a server refuses its own
    golden file and never becomes ready. The rules are the descriptor's: no null where the
    input is not nullable, a finite number within ``[min, max]``, a listed category. The row
    marked ``"synthetic": "unseen_category"`` is exempt from the category rule only: it is there
    to check the unseen-category path on purpose."""
    problems = []
    rows = golden.get("rows") or []
    for i, row in enumerate(rows):
        inputs = row.get("inputs") or {}
        unseen_ok = row.get("synthetic") == "unseen_category"
        for spec in descriptor.inputs:
            problem = _input_problem(spec, inputs.get(spec.name), spec.name in inputs, unseen_ok)
            if problem:
                problems.append(f"golden[{i}].{spec.name}: {problem}")
    if not rows:
        problems.append("golden.json has no rows")
    if not problems:
        detail = f"all {len(rows)} golden rows pass the model's input rules."
    else:
        shown = "; ".join(problems[:3]) + (
            f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        )
        detail = (
            f"{len(problems)} golden value(s) break the model's own input rules ({shown}): a "
            "server would refuse its own golden file and never become ready. Re-export with "
            "this version of the pipeline, or fix the contract's nullability and ranges."
        )
    return [Check("golden_inputs", not problems, len(problems), 0, "==", detail)]


def _input_problem(spec, value: Any, present: bool, unseen_ok: bool) -> str | None:
    if not present:
        return "missing"
    if value is None:
        return None if spec.nullable else "must not be null"
    if spec.is_numeric:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, not {value!r}"
        if not np.isfinite(value):
            return "must be finite"
        if (spec.min is not None and value < spec.min) or (
            spec.max is not None and value > spec.max
        ):
            return f"{value} is outside [{spec.min}, {spec.max}]"
        return None
    if not isinstance(value, str):
        return f"must be a string, not {value!r}"
    if spec.categories and value not in spec.categories and not unseen_ok:
        return f"{value!r} is not one of the categories"
    return None


def leakage_checks(validation: Mapping[str, Any]) -> list[Check]:
    """A feature that alone predicts the target almost perfectly fails the gate unless the
    contract allows it. Validate measures it (``leakage`` in its result); no such section: the
    check passes and says so."""
    leakage = validation.get("leakage")
    if not isinstance(leakage, Mapping):
        return [
            Check(
                "leakage",
                True,
                None,
                None,
                "==",
                "not checked: the validation result has no 'leakage' section.",
            )
        ]
    threshold = leakage.get("threshold")
    allowed = set(leakage.get("allowed") or ())
    suspects = [s for s in leakage.get("suspects") or () if s.get("column") not in allowed]
    if not suspects:
        let = f" ({', '.join(sorted(allowed))} allowed by the contract)" if allowed else ""
        scores = {
            k: float(v)
            for k, v in (leakage.get("scores") or {}).items()
            if k not in allowed and isinstance(v, int | float) and np.isfinite(v)
        }
        best = max(scores, key=scores.get) if scores else None
        shown = f" (the best, '{best}', scores {_fmt(scores[best])})" if best else ""
        detail = f"no feature alone predicts the target at or above {_fmt(threshold)}{shown}{let}."
        # The value is the best single-feature score, so the report reads "0.78 < 0.98 pass".
        return [Check("leakage", True, scores[best] if best else None, threshold, "<", detail)]
    named = ", ".join(
        f"'{s['column']}' ({s.get('metric', 'score')} {_fmt(s.get('score'))})" for s in suspects
    )
    worst = max(float(s.get("score") or 0.0) for s in suspects)
    detail = (
        f"feature(s) {named} alone predict the target at or above {_fmt(threshold)}: probably a "
        "leak (the answer encoded in a feature). Drop the column from the features (role: "
        "ignored in the contract), or allow it in the contract if it is legitimate."
    )
    return [Check("leakage", False, worst, threshold, "<", detail)]


#: Below this many test rows the gate's verdict comes with a warning: one row moves accuracy by
#: more than 3 points, and the floors and the champion comparison measure luck as much as skill.
SMALL_TEST_ROWS = 30


def small_test_warning(rows: int | None) -> str:
    """The note's warning for a test split too small to judge a model on, else ``""``."""
    if rows is None or rows >= SMALL_TEST_ROWS:
        return ""
    return (
        f"Warning: the test split holds only {rows} row{'s' if rows != 1 else ''}, so each "
        f"metric moves by about {100 / max(rows, 1):.0f} points per row: the verdict says "
        "little. Give the test split more rows (more data, or a larger preprocess.test_size)."
    )


def decide(
    metrics: Mapping[str, float],
    parity: Mapping[str, Any],
    validation: Mapping[str, Any],
    gate: GateParams,
    model_name: str,
    candidate: Mapping[str, Any],
    champion: Champion | None,
    candidate_onnx_metrics: Mapping[str, float] | None = None,
    registry_note: str = "",
    descriptor: ModelDescriptor | None = None,
    golden: Mapping[str, Any] | None = None,
    suggested_name: str = "",
    task: Task | None = None,
    baseline: Mapping[str, float] | None = None,
    test_rows: int | None = None,
    leaf: str = "",
) -> GateReport:
    """Run every check; pure, so each rule is testable on plain dicts.

    ``candidate_onnx_metrics`` are the candidate's metrics computed the same way as the
    champion's (ONNX Runtime on the current test split); the comparison uses them, falling back
    to ``metrics`` when they are not given.
    """
    task = task or (descriptor.task if descriptor is not None else Task.MULTICLASS)
    checks = floor_checks(metrics, task_block(gate, "min", task), task)
    if baseline is not None:
        checks += baseline_checks(
            metrics,
            baseline,
            task_block(gate, "baseline_margin", task),
            estimator=str(candidate.get("estimator") or ""),
            leaf=leaf,
        )
    checks += status_checks(parity, validation)
    checks += leakage_checks(validation)
    if golden is not None and descriptor is not None:
        checks += golden_checks(descriptor, golden)
    if champion is not None and champion.skipped:
        note = (
            f"Not compared with the champion of '{model_name}' (version {champion.version}): "
            f"{champion.skipped}, so it is a model of other data. Give this data its own "
            f"registered model: set registry.model_name in params.yaml (e.g. '{suggested_name}')."
        )
        champion_info = asdict(champion)
        note += " Absolute thresholds only."
    elif champion is not None:
        compared = candidate_onnx_metrics if candidate_onnx_metrics is not None else metrics
        checks += champion_checks(compared, champion, task_block(gate, "max_regression", task))
        note = (
            f"Compared with the current champion of '{model_name}', version {champion.version}"
            f" (run {champion.run_id}), both scored with ONNX Runtime on the current test split."
        )
        champion_info: dict[str, Any] | None = asdict(champion)
    else:
        note = registry_note or f"No champion of '{model_name}' in the registry yet."
        note += " Absolute thresholds only."
        champion_info = None
    warning = small_test_warning(test_rows)
    failed = [c.name for c in checks if not c.passed]
    return GateReport(
        passed=not failed,
        model_name=model_name,
        checks=checks,
        candidate={**candidate, "onnx_metrics": dict(candidate_onnx_metrics or {})},
        champion=champion_info,
        note=note,
        failed=failed,
        warning=warning,
    )


def failure_message(report: GateReport) -> str:
    """One paragraph naming each failed check with its value and threshold."""
    failed = [c for c in report.checks if not c.passed]
    parts = [f"{c.name}: {c.detail}" for c in failed]
    return (
        f"{len(failed)} of {len(report.checks)} checks failed for '{report.model_name}': "
        + " ".join(parts)
        + (f" {report.warning}" if report.warning else "")
        + " See reports/gate.md."
    )


def render_markdown(report: GateReport) -> str:
    """The report for people: a verdict, what was compared, one table row per check."""
    verdict = "PASSED" if report.passed else "FAILED"
    cand = report.candidate
    lines = [
        f"# Model gate: {verdict}",
        "",
        f"Candidate for `{report.model_name}`: {cand.get('estimator', '?')} from MLflow run "
        f"`{cand.get('run_id', '?')}`.",
        "",
        report.note,
        "",
        *([f"**{report.warning}**", ""] if report.warning else []),
        "| check | value | threshold | result | detail |",
        "|---|---|---|---|---|",
    ]
    for c in report.checks:
        threshold = "" if c.threshold is None else f"{c.op} {_fmt(c.threshold)}"
        result = "pass" if c.passed else "**FAIL**"
        lines.append(f"| `{c.name}` | {_fmt(c.value)} | {threshold} | {result} | {c.detail} |")
    if report.champion and report.champion.get("metrics"):
        champ = report.champion["metrics"]
        ours = report.candidate.get("onnx_metrics") or {}
        lines += [
            "",
            f"Test-split metrics (ONNX Runtime, {champ.get('rows', '?')} rows):",
            "",
            f"| metric | candidate | champion v{report.champion['version']} |",
            "|---|---|---|",
        ]
        for metric in (m for m in champ if m != "rows"):
            if metric in champ:
                lines.append(f"| {metric} | {_fmt(ours.get(metric))} | {_fmt(champ[metric])} |")
    if not report.passed:
        lines += ["", "Failed: " + ", ".join(f"`{n}`" for n in report.failed)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- ONNX scoring
def predict_onnx(
    model_path: str | Path, descriptor: ModelDescriptor, frame: pd.DataFrame
) -> np.ndarray:
    """What the exported graph outputs for ``frame``: class probabilities ``[N, C]`` (columns in
    descriptor ``classes`` order) or predictions ``[N]``; the feed is
    :func:`model_spec.feed.build_feed`, as everywhere else."""
    import onnxruntime as ort

    try:
        feed = build_feed(descriptor, frame)
    except FeedError as exc:
        raise PipelineError(f"the test split does not fit the model's inputs: {exc}.") from None
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = PREDICTION if descriptor.task.is_regression else PROBABILITIES
    (output,) = session.run([name], feed)
    output = np.asarray(output, dtype="float64")
    return output.reshape(-1) if descriptor.task.is_regression else output


def score_export(export_dir: str | Path, test: pd.DataFrame) -> dict[str, float]:
    """Metrics of an exported model (``model.json`` + its ONNX file) on raw test rows."""
    export_dir = Path(export_dir)
    descriptor = _descriptor(export_dir)
    target = descriptor.target
    if target not in test.columns:
        raise PipelineError(f"the test split has no target column '{target}'.")
    output = predict_onnx(export_dir / descriptor.onnx.file, descriptor, test)
    if descriptor.task.is_classification:
        # float32 rows sum to 1 only within ~1e-7; scikit-learn's log_loss warns about that.
        output = output / output.sum(axis=1, keepdims=True)
        actual = category_text(test[target]).to_numpy(dtype=object)
    else:
        actual = test[target].to_numpy()
    return compute_metrics(descriptor.task, actual, output, list(descriptor.classes))


def _descriptor(path: str | Path) -> ModelDescriptor:
    try:
        return ModelDescriptor.read(path)
    except DescriptorError as exc:
        raise PipelineError(f"model descriptor: {exc}") from None


def find_export_dir(root: Path) -> Path | None:
    """Where a downloaded registered version keeps ``model.json`` and its ONNX file."""
    preferred = [root / EXPORT_ARTIFACT_DIR / DESCRIPTOR_FILE, root / DESCRIPTOR_FILE]
    found = [p for p in preferred if p.is_file()] or sorted(root.rglob(DESCRIPTOR_FILE))
    return found[0].parent if found else None


def score_champion(
    model_name: str, version, test: pd.DataFrame, candidate: ModelDescriptor | None = None
) -> Champion:
    """Download a registered version and score it; a failure is recorded, not raised.

    When the champion is not comparable with ``candidate`` (another task, other inputs or
    classes, or a descriptor this pipeline cannot read), it is not scored: ``skipped`` says why.
    """
    import mlflow

    run_id, number = version.run_id, str(version.version)
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        try:
            root = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{model_name}/{number}", dst_path=tmp
                )
            )
        except mlflow.exceptions.MlflowException as exc:
            return Champion(number, run_id, error=f"download failed: {exc.message}")
        export_dir = find_export_dir(root)
        if export_dir is None:
            return Champion(
                number, run_id, error=f"its artifacts hold no {DESCRIPTOR_FILE} descriptor."
            )
        if candidate is not None:
            try:
                why = comparability(candidate, ModelDescriptor.read(export_dir))
            except DescriptorError as exc:
                why = f"its descriptor cannot be read by this pipeline ({exc})"
            if why:
                return Champion(number, run_id, skipped=why)
        try:
            metrics = score_export(export_dir, test)
        except (PipelineError, RuntimeError, KeyError, ValueError) as exc:
            return Champion(number, run_id, error=str(exc))
    return Champion(number, run_id, metrics=metrics)


# ---------------------------------------------------------------------------- CLI
def baseline_metrics(
    descriptor: ModelDescriptor, train: pd.DataFrame, test: pd.DataFrame
) -> dict[str, float]:
    """The test metrics of a model that ignores its inputs: the training split's class shares
    (classification) or mean (regression), scored like any model."""
    target, task, classes = descriptor.target, descriptor.task, list(descriptor.classes)
    for split, frame in (("training", train), ("test", test)):
        if target not in frame.columns:
            raise PipelineError(f"the {split} split has no target column '{target}'.")
    y_train, y_test = train[target], test[target]
    if task.is_classification:
        y_train, y_test = category_text(y_train), category_text(y_test)
    output = baseline_output(task, y_train.to_numpy(), len(test), classes)
    return compute_metrics(task, y_test.to_numpy(), output, classes)


def _test(path: str) -> pd.DataFrame:
    test = _table(path, "test split")
    if test.empty:
        raise PipelineError(f"test split '{path}' is empty.")
    return test


def _table(path: str, what: str) -> pd.DataFrame:
    try:
        return read_table(path)
    except FileNotFoundError:
        raise PipelineError(f"{what} '{path}' does not exist; run the pipeline first.") from None


def suggest_name(params, name: str, descriptor: ModelDescriptor) -> str:
    """A registered-model name for this data that is not ``name``."""
    suggested = default_model_name(params.data.source, descriptor.task)
    return suggested if suggested != name else f"{name}-2"


def _read(path: str | Path, what: str) -> Any:
    try:
        return read_json(path)
    except FileNotFoundError:
        raise PipelineError(f"{what} '{path}' does not exist; run the pipeline first.") from None


def _log_to_run(run_id: str, passed: bool, files: list[str]) -> None:
    import mlflow

    try:
        mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise PipelineError(
            f"MLflow run {run_id} (lineage.run_id of the exported model) is not in the store; "
            "retrain with `make retrain` for a run in this one (DVC's run cache can restore a "
            "train stage run against another MLflow store)."
        ) from None
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metric("gate_passed", 1.0 if passed else 0.0)
        mlflow.set_tag("gate_passed", str(passed).lower())
        for path in files:
            mlflow.log_artifact(path, artifact_path="gate")


@cli("gate")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", required=True)
    parser.add_argument("--metrics", required=True, help="evaluate's metrics.json")
    parser.add_argument("--parity", required=True, help="export's parity.json")
    parser.add_argument("--validation", required=True, help="validate's result.json")
    parser.add_argument("--model-dir", required=True, help="the exported model (models/export)")
    parser.add_argument("--test", required=True, help="test split (Parquet)")
    parser.add_argument(
        "--train", help="training split (Parquet): the trivial baseline's class shares / mean"
    )
    parser.add_argument("--out", required=True, help="gate report JSON to write")
    parser.add_argument("--report", required=True, help="gate report Markdown to write")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    params = load_params(args.params)
    check_gate_params(params.gate)
    metrics = _read(args.metrics, "metrics file")
    parity = _read(args.parity, "parity report")
    validation = _read(args.validation, "validation result")
    model_dir = Path(args.model_dir)
    descriptor = _descriptor(model_dir)
    name = model_name(params)
    run_id = descriptor.lineage.run_id
    if not run_id:
        raise PipelineError(f"'{model_dir / DESCRIPTOR_FILE}' has no lineage.run_id; rerun export.")
    candidate = {
        "run_id": run_id,
        "estimator": descriptor.estimator,
        "family": descriptor.family,
        "task": descriptor.task.value,
        "onnx_sha256": file_sha256(model_dir / descriptor.onnx.file),
        # The files the server reads beside the graph: register checks they are the ones judged.
        "descriptor_sha256": file_sha256(model_dir / DESCRIPTOR_FILE),
        "golden_sha256": file_sha256(model_dir / GOLDEN_FILE)
        if (model_dir / GOLDEN_FILE).is_file()
        else None,
        "metrics": dict(metrics),
    }

    from pipeline.tracking import configure

    configure(params.mlflow.experiment)
    champion_version, registry_note = champion_of(name)
    champion = onnx_metrics = None
    test = _test(args.test)
    if champion_version is not None:
        champion = score_champion(name, champion_version, test, descriptor)
        if not champion.skipped:
            onnx_metrics = score_export(model_dir, test)
    baseline = None
    if args.train:
        train = _table(args.train, "training split")
        baseline = baseline_metrics(descriptor, train, test)
    golden_path = model_dir / GOLDEN_FILE
    golden = read_json(golden_path) if golden_path.is_file() else {}
    if parity.get("run_id") not in (None, run_id):
        parity = {
            **parity,
            "passed": False,
            "error": f"the parity report is for run {parity['run_id']}, not for the export in "
            f"'{model_dir}' (run {run_id})",
        }

    report = decide(
        metrics,
        parity,
        validation,
        params.gate,
        name,
        candidate,
        champion,
        onnx_metrics,
        registry_note,
        descriptor=descriptor,
        golden=golden,
        suggested_name=suggest_name(params, name, descriptor),
        baseline=baseline,
        test_rows=len(test),
        leaf=leaf_setting(params.train, descriptor.estimator),
    )
    write_json(args.out, report.to_dict())
    with atomic_path(args.report) as tmp:
        tmp.write_text(render_markdown(report))
    try:
        _log_to_run(run_id, report.passed, [args.out, args.report])
    except BaseException as exc:  # a verdict the run does not hold is no verdict for register
        with contextlib.suppress(Exception):
            invalidate_gate_report(
                Path(args.out), Path(args.report), name, run_id,
                f"the gate's verdict could not be recorded in MLflow run {run_id} "
                f"({type(exc).__name__}); run `make gate` again",
            )  # fmt: skip
        raise

    if not report.passed:
        raise PipelineError(failure_message(report))
    warning = f" {report.warning}" if report.warning else ""
    print(f"gate: all {len(report.checks)} checks passed. {report.note}{warning} -> {args.report}")


if __name__ == "__main__":
    raise SystemExit(main())
