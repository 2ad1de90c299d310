"""``validate``: check the raw table against the data contract with Great Expectations.

The expectation suite is built from the :class:`~pipeline.contract.Contract` alone and run by
real GX validation definitions in an ephemeral (in-memory) context, so no ``gx/`` project folder
is ever created; the Data Docs are then built from the stored results into the directory the
caller names. The suite runs in parts (the table checks, then groups of columns each on a frame
of its own columns) because GX's cost per metric grows with the batch's width; on a wide
table every second part runs in a forked child (:func:`_run_definitions`). The outcome is
a :class:`ValidationReport` whose ``failures`` say, in plain
words, which column broke which rule.

``python -m pipeline.stages.validate infer`` drafts a contract from ``data.source`` instead
(like TFX SchemaGen); a person reviews it before it is committed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import re
import sys
import unicodedata
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline.config import load_params
from pipeline.contract import (
    DEFAULT_MAX_DUPLICATES,
    ColumnSpec,
    Contract,
    load_contract,
    min_rows_per_class,
    parse_contract,
)
from pipeline.errors import PipelineError, cli
from pipeline.frames import category_label, category_text
from pipeline.io import atomic_path, read_table, write_json
from pipeline.sources import (
    comma_reading,
    headerless_hint,
    is_comma_number,
    looks_missing,
    reading_hint,
)

#: dtype names (and, for ``object`` columns, value types) a numeric column may hold.
NUMERIC_TYPES = (
    *(f"int{b}" for b in (8, 16, 32, 64)),
    *(f"uint{b}" for b in (8, 16, 32, 64)),
    *(f"float{b}" for b in (16, 32, 64)),
    *(f"{k}{b}Dtype" for k in ("Int", "UInt") for b in (8, 16, 32, 64)),
    "Float32Dtype",
    "Float64Dtype",
    "int",
    "float",
)

_DOCS_SITE = "local_site"
_EXAMPLES = 3  # offending values quoted per failed check
_LISTED = 20  # allowed categories a message lists

# The order in which a column's checks are reported; table-level checks come first.
_RULES = (
    "rows",
    "columns",
    "duplicates",
    "present",
    "type",
    "finite",
    "empty",
    "missing",
    "range",
    "categories",
    "classes",
    "class_spelling",
    "class_rows",
)
#: The ``expectation`` of checks GX has no expectation for, computed with pandas on the same
#: frame (they are in result.json, not in the Data Docs).
PANDAS_CHECK = "pipeline.stages.validate (pandas)"

#: The largest magnitude a numeric cell may have: float32's, the precision the exported ONNX
#: graphs compute in. A larger number becomes infinite there.
LARGEST_NUMBER = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Check:
    """One expectation of the suite and what the data did with it."""

    column: str | None  # None for table-level checks
    rule: str  # one of _RULES
    expectation: str  # the GX expectation type, e.g. "expect_column_values_to_be_between"
    success: bool
    threshold: dict[str, Any]
    observed: Any = None  # observed value of aggregate checks (row count, dtype, column list)
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: tuple[Any, ...] = ()
    error: str | None = None  # GX could not evaluate the expectation
    hint: str = ""  # a params setting that would read the offending values right

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "rule": self.rule,
            "expectation": self.expectation,
            "success": self.success,
            "threshold": self.threshold,
            "observed": self.observed,
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": self.unexpected_percent,
            "examples": list(self.examples),
            "error": self.error,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class ValidationReport:
    success: bool
    rows: int
    checks: tuple[Check, ...]
    failures: tuple[str, ...]  # one plain-words sentence per broken rule
    gx_version: str
    duplicates: dict[str, float] | None = None  # {"share", "max"}
    leakage: dict[str, Any] | None = None  # see leakage_report()

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "rows": self.rows,
            "failures": list(self.failures),
            "gx_version": self.gx_version,
            "duplicates": self.duplicates,
            "leakage": self.leakage,
            "checks": [c.to_dict() for c in self.checks],
        }


# --------------------------------------------------------------------------- the suite


def _expectations(contract: Contract) -> list[Any]:
    """The GX expectations that say what the contract says, in reporting order.

    Each carries ``meta = {"rule", "column"}`` so its result can be read back without
    guessing from the expectation type. Categorical values are compared as text (see
    :func:`_as_checked`); missing values count only against ``max_missing``.
    """
    import great_expectations.expectations as gxe

    def meta(rule: str, column: str | None = None) -> dict[str, Any]:
        return {"rule": rule, "column": column}

    suite: list[Any] = [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=contract.min_rows, max_value=contract.max_rows, meta=meta("rows")
        ),
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[c.name for c in contract.columns], exact_match=True, meta=meta("columns")
        ),
    ]
    for spec in contract.columns:
        name = spec.name
        if spec.is_numeric:
            suite.append(
                gxe.ExpectColumnValuesToBeInTypeList(
                    column=name, type_list=list(NUMERIC_TYPES), meta=meta("type", name)
                )
            )
        suite.append(
            gxe.ExpectColumnValuesToNotBeNull(
                column=name, mostly=_mostly(spec.max_missing), meta=meta("missing", name)
            )
        )
        if spec.is_numeric and (spec.min is not None or spec.max is not None):
            suite.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=name, min_value=spec.min, max_value=spec.max, meta=meta("range", name)
                )
            )
        if not spec.is_numeric and spec.categories is not None:
            suite.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=name,
                    value_set=list(spec.categories),
                    mostly=_mostly(_max_unknown(spec)),
                    meta=meta("categories", name),
                )
            )
    return suite


#: Columns per GX validation run (see :func:`_suite_parts`).
COLUMNS_PER_PART = 10


def _suite_parts(contract: Contract) -> list[tuple[str, list[Any], list[str] | None]]:
    """The suite split into ``(name, expectations, columns)`` parts run one by one.

    The table-level expectations (row count, column set) form the part ``data_contract`` on
    the whole table (``columns`` None); the per-column ones are grouped by
    ``COLUMNS_PER_PART`` (10) contract columns, each run on a frame of just those columns.
    """
    expectations = _expectations(contract)
    parts: list[tuple[str, list[Any], list[str] | None]] = [
        ("data_contract", [e for e in expectations if e.meta["column"] is None], None)
    ]
    names = [c.name for c in contract.columns]
    for start in range(0, len(names), COLUMNS_PER_PART):
        chunk = names[start : start + COLUMNS_PER_PART]
        end = start + len(chunk)
        mine = [e for e in expectations if e.meta["column"] in chunk]
        parts.append((f"data_contract_columns_{start + 1:03d}_{end:03d}", mine, chunk))
    return parts


def _max_unknown(spec: ColumnSpec) -> float:
    """The target admits no unknown classes whatever the contract says."""
    return 0.0 if spec.role == "target" else spec.max_unknown


def _mostly(max_share: float) -> float:
    return min(1.0, max(0.0, 1.0 - max_share))


def _as_checked(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The frame as GX sees it: categorical columns as text, missing values left missing.

    ``preprocess`` turns categories into strings the same way, so a contract category ``"1"``
    matches an integer-coded column. Numeric columns are passed as they are: their type is
    what the ``type`` rule checks.
    """
    out = frame.copy(deep=False)
    for spec in contract.columns:
        if spec.is_numeric or spec.name not in out.columns:
            continue
        column = out[spec.name]
        if not pd.api.types.is_string_dtype(column) or column.dtype == object:
            out[spec.name] = category_text(column)  # 1.0 (a code beside a gap) -> "1"
        else:
            # pandas' Arrow-backed text: GX filters the whole frame once per metric, and
            # taking rows of Arrow columns cost seconds on wide tables (BENCHMARKS.md).
            out[spec.name] = column.astype(object)
    return out


@contextmanager
def _quiet_gx() -> Iterator[None]:
    """Silence GX's loggers and library warnings for the duration of a run, then restore.

    Also keeps tqdm (GX's progress bars, which are off) from starting its monitor thread: a
    second thread would keep :func:`_run_definitions` from forking.
    """
    from tqdm import tqdm

    logger = logging.getLogger("great_expectations")
    level, interval = logger.level, tqdm.monitor_interval
    logger.setLevel(logging.ERROR)
    tqdm.monitor_interval = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
        tqdm.monitor_interval = interval


def validate_table(
    frame: pd.DataFrame,
    contract: Contract,
    docs_dir: Path | None = None,
    min_class_rows: int = 3,
) -> ValidationReport:
    """Run the contract's expectation suite on ``frame`` with GX (see :func:`_suite_parts`).

    ``docs_dir``, when given, receives the HTML Data Docs (``index.html`` and its pages).
    Nothing else is written: the GX context lives in memory. A failed check does not raise;
    read ``report.success`` and ``report.failures``. Besides the suite, the table checks GX
    has no expectation for run on the same frame (:func:`_table_checks`): duplicate rows, an
    entirely empty column, a target with one class or value, and classes with fewer than
    ``min_class_rows`` distinct rows (what ``preprocess``'s split needs). Leakage is reported,
    never failed on (the gate decides).
    """
    with _quiet_gx():
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        sites = {}
        if docs_dir is not None:
            sites[_DOCS_SITE] = {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(docs_dir).resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            data_docs_sites=sites,
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        context = gx.get_context(project_config=config, mode="ephemeral")
        batch = (
            context.data_sources.add_pandas("raw_table")
            .add_dataframe_asset("dataset")
            .add_batch_definition_whole_dataframe("whole_table")
        )
        checked = _as_checked(frame, contract)
        run_id = gx.RunIdentifier(run_name="validate")
        jobs = []
        for name, expectations, columns in _suite_parts(contract):
            # Each suite in one add: suite.add_expectation() re-serialises the stored suite
            # on every call, which made a 200-column contract cost minutes (BENCHMARKS.md).
            suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{name}_on_raw_table", data=batch, suite=suite)
            )
            # A column part sees only its columns: GX filters the whole batch once per
            # metric, so one batch of a wide table cost time in the square of its width.
            data = checked if columns is None else checked[[c for c in columns if c in checked]]
            jobs.append((definition, data))
        results = _run_definitions(context, jobs, run_id)
        if sites:  # the Data Docs are rendered from the stored results, one page per part
            context.build_data_docs(site_names=[_DOCS_SITE])

    gx_checks = [
        _name_non_numbers(_read_result(r, contract), frame)
        for part in results
        for r in part.results
    ]
    share = _duplicate_share(frame)  # hashes every row: once, for the check and the report
    gx_checks += _presence(gx_checks, contract)
    checks = sorted(
        gx_checks + _table_checks(frame, contract, min_class_rows, share),
        key=lambda c: (
            c.column is not None,
            _column_order(contract, c.column),
            _RULES.index(c.rule),
        ),
    )
    success = all(bool(part.success) for part in results) and all(c.success for c in checks)
    failures = tuple(_explain(checks))
    if not success and not failures:  # every failed check is explained; this is a safety net
        failures = ("Great Expectations reported a failure; see result.json",)
    return ValidationReport(
        success=success,
        rows=len(frame),
        checks=tuple(checks),
        failures=failures,
        gx_version=gx.__version__,
        duplicates={"share": share, "max": contract.max_duplicates},
        leakage=leakage_report(frame, contract),
    )


#: Parts from which the GX runs are shared between two processes (see _run_definitions).
PARALLEL_MIN_PARTS = 6


def _run_definitions(context: Any, jobs: list[tuple[Any, pd.DataFrame]], run_id: Any) -> list:
    """Run each ``(validation definition, frame)``; the results also land in the context's
    store, from which the Data Docs are built.

    With at least ``PARALLEL_MIN_PARTS`` parts, two usable CPUs and ``os.fork``, every second
    part runs in a forked child (GX is already imported and the suites are stored, so the
    child starts at once); it sends back the serialised results, which the parent puts in its
    store exactly as GX had stored them. The fork happens before any GX run and only while this
    is the process's only thread (see :func:`_quiet_gx`), so no lock can be held by a thread
    the child lacks. A child that fails makes its parts run here instead: the outcome never
    depends on the fork.
    """
    import json
    import os
    import threading

    def run(part: list[tuple[Any, pd.DataFrame]]) -> list:
        return [
            definition.run(
                batch_parameters={"dataframe": data}, result_format="BASIC", run_id=run_id
            )
            for definition, data in part
        ]

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (
        len(jobs) < PARALLEL_MIN_PARTS
        or (cpus or 1) < 2
        or not hasattr(os, "fork")
        or threading.active_count() > 1
    ):
        return run(jobs)
    mine, theirs = jobs[0::2], jobs[1::2]
    store = context.validation_results_store
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run its parts, send their stored form, exit without cleanup
        code = 1
        try:
            os.close(read)
            run(theirs)
            entries = [
                (store.key_to_tuple(key), store.store_backend.get(store.key_to_tuple(key)))
                for key in store.list_keys()
            ]
            with os.fdopen(write, "w", encoding="utf-8") as pipe:
                json.dump(entries, pipe)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        results = run(mine)
    finally:  # even if this side raised: the child is read to its end and reaped
        with os.fdopen(read, encoding="utf-8") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(pid, 0)
    if status != 0 or not payload:
        return results + run(theirs)
    for key, serialised in json.loads(payload):
        store.store_backend.set(tuple(key), serialised)
        results.append(store.deserialize(serialised))
    return results


def _name_non_numbers(check: Check, frame: pd.DataFrame) -> Check:
    """A numeric column GX refused for its dtype alone (a CSV column with one text cell is
    read as text throughout): count and quote the values that are not numbers, so the
    message names the cell to fix rather than the type ``str``. Either way, when a params
    setting would read those values right (``?`` as missing, decimal commas), say which."""
    if check.rule != "type" or check.success:
        return check
    if check.column not in frame.columns:
        return check
    present = frame[check.column].dropna()
    if not (pd.api.types.is_string_dtype(present) or present.dtype == object):
        return check
    numbers = pd.to_numeric(present.map(str), errors="coerce")
    bad = present[numbers.isna()]
    if bad.empty:  # numbers stored as text: the dtype is the problem, as GX says
        return dataclasses.replace(
            check,
            hint=(
                "every value is a number written as text (a string column in a Parquet file): "
                "store the column as numbers at the source, e.g. pandas' "
                "pd.to_numeric(df[column]) before writing it"
            ),
        )
    if check.unexpected_count is not None:  # GX counted the values itself
        return dataclasses.replace(check, hint=reading_hint(bad.map(str).tolist()))
    return dataclasses.replace(
        check,
        unexpected_count=len(bad),
        unexpected_percent=100 * len(bad) / len(frame),
        examples=_examples(bad.map(str).tolist()),
        hint=reading_hint(bad.map(str).tolist()),
    )


def _presence(checks: list[Check], contract: Contract) -> list[Check]:
    """One ``present`` check per contract column, read from the table's column-set result.

    ``expect_column_to_exist`` per column said the same thing at the cost of one more
    expectation per column; the column-set expectation already observes every column name.
    """
    (columns,) = (c for c in checks if c.rule == "columns")
    seen = set(columns.observed or ())
    return [
        Check(
            column=spec.name,
            rule="present",
            expectation=columns.expectation,
            success=spec.name in seen,
            threshold={"role": spec.role},
            observed=spec.name in seen,
            error=columns.error,
        )
        for spec in contract.columns
    ]


# --------------------------------------------------------------------------- pandas checks


def _duplicate_share(frame: pd.DataFrame) -> float:
    """Share of rows that are an exact copy of an earlier row (all columns compared)."""
    if frame.empty:
        return 0.0
    return round(float(frame.duplicated().mean()), 6)


def _check(column: str | None, rule: str, success: bool, threshold: dict, observed) -> Check:
    return Check(
        column=column,
        rule=rule,
        expectation=PANDAS_CHECK,
        success=success,
        threshold=threshold,
        observed=observed,
    )


def _table_checks(
    frame: pd.DataFrame, contract: Contract, min_class_rows: int, share: float
) -> list[Check]:
    """The rules a GX suite cannot say: duplicates (``share`` from :func:`_duplicate_share`),
    empty columns, the target's classes."""
    checks = [
        _check(
            None,
            "duplicates",
            share <= contract.max_duplicates,
            {"max_duplicates": contract.max_duplicates},
            {"share": share, "count": int(round(share * len(frame)))},
        )
    ]
    for spec in contract.columns:
        if spec.role == "ignored" or spec.name not in frame.columns:
            continue
        present = int(frame[spec.name].notna().sum())
        checks.append(
            _check(spec.name, "empty", present > 0 or frame.empty, {"role": spec.role}, present)
        )
        if spec.is_numeric:
            checks.append(_finite(frame[spec.name], spec.name, len(frame)))
    target = contract.target
    if target not in frame.columns or frame.empty:
        return checks
    column = frame[target]
    if contract.target_spec.is_numeric:
        values = pd.to_numeric(column, errors="coerce").dropna()
        distinct = int(values.nunique())
        checks.append(_check(target, "classes", distinct >= 2, {"min_distinct": 2}, distinct))
        return checks
    labels = category_text(column).dropna()
    # Distinct inputs per class, as preprocess's split counts them: rows with the same features
    # go to one split together, whatever else differs (an ignored id, the label).
    inputs = [c for c in contract.feature_names if c in frame.columns] + [target]
    counts = category_text(
        frame.loc[labels.index, inputs].drop_duplicates().loc[:, target]
    ).value_counts()
    observed = {str(k): int(v) for k, v in counts.sort_index().items()}
    checks.append(_check(target, "classes", len(counts) >= 2, {"min_classes": 2}, observed))
    # ' yes', 'Yes' and 'yes' (adult census: ' >50K' and ' >50K.') trained as classes of their
    # own: the gate then failed on metrics and blamed the model.
    spelt = _spelt_groups(observed)
    checks.append(_check(target, "class_spelling", not spelt, {"distinct_spellings": True}, spelt))
    if len(counts) >= 2:  # classes outside the contract's categories are reported there
        known = set(contract.target_spec.categories or observed)
        rare = {k: v for k, v in observed.items() if v < min_class_rows and k in known}
        checks.append(
            _check(
                target,
                "class_rows",
                not rare,
                {
                    "min_distinct_rows_per_class": min_class_rows,
                    "categories": sorted(known),
                },
                observed,
            )
        )
    return checks


def _unusable(values: pd.Series) -> pd.Series:
    """The numbers no model here can use: infinite, or beyond :data:`LARGEST_NUMBER`."""
    return values[values.abs() > LARGEST_NUMBER]  # inf included; NaN (missing) is not


def _finite(column: pd.Series, name: str, rows: int) -> Check:
    """No infinite or overflowing number in a numeric column, whatever its range says: no
    imputer, scaler or model takes an infinite one (scikit-learn refuses the whole table; a
    CSV's ``inf`` reads as one), and one beyond float32 becomes infinite in the exported graph
    (a Keras loss turned NaN, a regression's metrics infinite, a parity failure at export)."""
    values = pd.to_numeric(column, errors="coerce").astype(float)
    infinite = _unusable(values)
    infinite = pd.concat([infinite[~np.isinf(infinite)], infinite[np.isinf(infinite)]])
    return Check(
        column=name,
        rule="finite",
        expectation=PANDAS_CHECK,
        success=infinite.empty,
        threshold={"infinite": 0, "max_abs": LARGEST_NUMBER},
        observed=len(infinite),
        unexpected_count=len(infinite),
        unexpected_percent=100 * len(infinite) / rows if rows else 0.0,
        examples=tuple(dict.fromkeys(str(v) for v in infinite))[:_EXAMPLES],
    )


def _column_order(contract: Contract, column: str | None) -> int:
    names = [c.name for c in contract.columns]
    return names.index(column) if column in names else -1


# --------------------------------------------------------------------------- leakage

#: Rows scored for leakage (a seeded sample of larger tables) and the folds scored out of.
LEAKAGE_MAX_ROWS = 2_000
LEAKAGE_FOLDS = 5


def leakage_report(frame: pd.DataFrame, contract: Contract) -> dict[str, Any]:
    """Score how well each feature ALONE predicts the target, out of fold.

    A feature scoring at least ``contract.leakage_threshold`` is a suspect: it probably
    encodes the label (an id sorted by class, a column filled in after the fact). Each
    feature gets one model of its own, fitted on 4 of 5 folds and scored on the fifth:

    - classification: balanced accuracy (mean recall over classes; 1/classes when the
      feature says nothing) of the majority class among the k nearest training values on a
      numeric feature (k = 1% of the rows, at least 5), or of the majority class per
      category for a categorical one;
    - regression: R^2 of the mean target of the k nearest training values on a numeric
      feature, or of the mean target per category for a categorical one.

    All of it is numpy, no model fitted per feature and fold: 0.7 to 1.0 s CPU for 200
    features where one-feature decision trees took 4.5 s, with scores within a few
    hundredths of theirs on real tables (BENCHMARKS.md).

    Validation only reports; the gate fails on a suspect the contract does not allow
    (``leakage_ok: true`` on the column).
    """
    report: dict[str, Any] = {
        "threshold": contract.leakage_threshold,
        "allowed": [c.name for c in contract.features if c.leakage_ok],
        "suspects": [],
        "scores": {},
    }
    target = contract.target
    if target not in frame.columns:
        report["skipped"] = f"no target column '{target}'"
        return report
    regression = contract.target_spec.is_numeric
    y = frame[target]
    y = pd.to_numeric(y, errors="coerce") if regression else y.astype(object)
    keep = y.notna().to_numpy()
    rows, y = frame.loc[keep].reset_index(drop=True), y.loc[keep].reset_index(drop=True)
    if len(rows) > LEAKAGE_MAX_ROWS:
        rows = rows.sample(LEAKAGE_MAX_ROWS, random_state=0)
        y = y.loc[rows.index]
    y = y.astype(float) if regression else y.map(str)
    if y.nunique() < 2 or len(rows) < 2 * LEAKAGE_FOLDS:
        report["skipped"] = "the target has fewer than two values or too few rows"
        return report
    folds = np.random.default_rng(0).permutation(len(rows)) % LEAKAGE_FOLDS
    for spec in contract.features:
        if spec.name not in rows.columns:
            continue
        score, metric = _one_feature_score(rows[spec.name], spec, y.to_numpy(), folds, regression)
        report["scores"][spec.name] = score
        if score >= contract.leakage_threshold:
            report["suspects"].append({"column": spec.name, "score": score, "metric": metric})
    return report


def _lookup(
    codes: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, regression: bool
) -> np.ndarray:
    """Predict ``test`` rows from their category: the training rows' mean target (regression)
    or most frequent class; a category unseen in training gets the overall one."""
    n_codes = int(codes.max()) + 1
    seen = np.bincount(codes[train], minlength=n_codes)
    if regression:
        sums = np.bincount(codes[train], weights=y[train], minlength=n_codes)
        fallback = float(y[train].mean())
        table = np.where(seen > 0, sums / np.maximum(seen, 1), fallback)
        return table[codes[test]]
    classes, y_codes = np.unique(y, return_inverse=True)
    counts = np.zeros((n_codes, len(classes)), dtype=np.int64)
    np.add.at(counts, (codes[train], y_codes[train]), 1)
    overall = int(np.bincount(y_codes[train], minlength=len(classes)).argmax())
    table = np.where(seen > 0, counts.argmax(axis=1), overall)
    return classes[table[codes[test]]]


def _one_feature_score(
    column: pd.Series, spec: ColumnSpec, y: np.ndarray, folds: np.ndarray, regression: bool
) -> tuple[float, str]:
    numeric = spec.is_numeric
    if numeric:
        x = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
        numeric = bool(np.isfinite(x).any())
    if not numeric:
        codes = pd.factorize(column.astype(object).where(column.notna(), None).map(str))[0]
    if regression:
        target = y
    else:
        classes, target = np.unique(y, return_inverse=True)
    predicted = np.empty(len(y), dtype=float if regression else np.int64)
    neighbours = max(5, len(y) // 100)
    for k in range(LEAKAGE_FOLDS):
        train, test = folds != k, folds == k
        if numeric:
            predicted[test] = _nearest(x[train], target[train], x[test], neighbours, regression)
        else:
            predicted[test] = _lookup(codes, target, train, test, regression)
    model_kind = "knn" if numeric else ("category_mean" if regression else "category_majority")
    if regression:
        spread = float(((y - y.mean()) ** 2).sum())
        score = 1.0 - float(((y - predicted) ** 2).sum()) / spread
        return round(score, 4), f"r2_one_feature_{model_kind}"
    recalls = [float(np.mean(predicted[target == c] == c)) for c in range(len(classes))]
    return round(float(np.mean(recalls)), 4), f"balanced_accuracy_one_feature_{model_kind}"


def _nearest(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, k: int, regression: bool
) -> np.ndarray:
    """Predict each test value from its ``k`` nearest training values of the same feature:
    their mean target (regression) or most frequent class code (ties to the lowest code).

    Missing values are a group of their own, predicted by the training rows missing there
    too, or by all training rows when none are.
    """
    n_classes = 0 if regression else int(y_train.max()) + 1

    def vote(labels: np.ndarray) -> np.ndarray:  # labels: (rows, k) -> one prediction a row
        if regression:
            return labels.mean(axis=1)
        cells = np.arange(len(labels))[:, None] * n_classes + labels
        counts = np.bincount(cells.ravel(), minlength=len(labels) * n_classes)
        return counts.reshape(len(labels), n_classes).argmax(axis=1)

    known, asked = np.isfinite(x_train), np.isfinite(x_test)
    fallback = y_train[~known] if (~known).any() else y_train
    out = np.empty(len(x_test), dtype=float if regression else np.int64)
    out[~asked] = vote(fallback[None, :])[0]
    if not known.any():
        out[asked] = vote(y_train[None, :])[0]
        return out
    order = np.argsort(x_train[known], kind="stable")
    xs, ys = x_train[known][order], y_train[known][order]
    k, values = min(k, len(xs)), x_test[asked]
    # The k nearest are xs[start : start + k] for a start within k of the insertion point:
    # a binary search, all values at once, moving right while the value past the window's
    # end is nearer than its first one (ties stay left, so the result is deterministic).
    insert = np.searchsorted(xs, values)
    low = np.clip(insert - k, 0, len(xs) - k)
    high = np.clip(insert, 0, len(xs) - k)
    while (active := low < high).any():
        middle = (low + high) // 2
        past = xs[np.minimum(middle + k, len(xs) - 1)]  # in range wherever ``active``
        right = values - xs[middle] > past - values
        low = np.where(active & right, middle + 1, low)
        high = np.where(active & ~right, middle, high)
    out[asked] = vote(ys[low[:, None] + np.arange(k)])
    return out


# --------------------------------------------------------------------------- reading results


def _read_result(result: Any, contract: Contract) -> Check:
    """Turn one GX ``ExpectationValidationResult`` into a :class:`Check`."""
    config = result.expectation_config
    rule, column = config.meta["rule"], config.meta["column"]
    raw = result.result or {}
    return Check(
        column=column,
        rule=rule,
        expectation=config.type,
        success=bool(result.success),
        threshold=_threshold(rule, column, contract),
        observed=_plain(raw.get("observed_value")),
        unexpected_count=raw.get("unexpected_count"),
        unexpected_percent=_plain(raw.get("unexpected_percent")),
        examples=_examples(raw.get("partial_unexpected_list") or []),
        error=_error_message(result.exception_info or {}),
    )


def _threshold(rule: str, column: str | None, contract: Contract) -> dict[str, Any]:
    if rule == "rows":
        return {"min": contract.min_rows, "max": contract.max_rows}
    if rule == "columns":
        return {"columns": [c.name for c in contract.columns], "extra_allowed": False}
    spec = contract.column(column)
    if rule == "present":
        return {"role": spec.role}
    if rule == "type":
        return {"type": "numeric"}
    if rule == "missing":
        return {"max_missing_percent": 100 * spec.max_missing}
    if rule == "range":
        return {"min": spec.min, "max": spec.max}
    if rule == "categories":
        return {
            "categories": list(spec.categories or ()),
            "max_unknown_percent": 100 * _max_unknown(spec),
        }
    raise ValueError(rule)


def _error_message(info: dict[str, Any]) -> str | None:
    """GX reports an evaluation error either flat or keyed by the metric that failed."""
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    for entry in info.values():
        if isinstance(entry, dict) and entry.get("exception_message"):
            return str(entry["exception_message"])
    return None


def _plain(value: Any) -> Any:
    """A JSON-safe copy: numpy scalars to Python, NaN to None, odd objects to their repr."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return repr(value)


def _examples(values: list[Any]) -> tuple[Any, ...]:
    seen: list[Any] = []
    for value in values:
        if isinstance(value, float | np.floating) and np.isinf(value):
            value = str(float(value))  # 'inf', where _plain would make it None (JSON's null)
        value = _plain(value)
        if value not in seen:
            seen.append(value)
        if len(seen) == _EXAMPLES:
            break
    return tuple(seen)


# --------------------------------------------------------------------------- plain words


def _pct(value: float | None) -> str:
    value = value or 0.0
    return "<0.1%" if 0 < value < 0.05 else f"{value:.1f}%"


def _values(count: int | None, percent: float | None) -> str:
    count = count or 0
    return f"{count} value{'s' if count != 1 else ''} ({_pct(percent)})"


def _eg(examples: tuple[Any, ...]) -> str:
    """The examples as a message quotes them: long text cut (a 10,000-character cell would
    otherwise make the paragraph)."""
    shown = (repr(_clip(v)) if isinstance(v, str) else repr(v) for v in examples)
    return f", e.g. {', '.join(shown)}" if examples else ""


def _explain(checks: list[Check]) -> Iterator[str]:
    """One sentence per failed rule, naming the column and the rule.

    A missing column, or a numeric column holding non-numbers, makes GX error on that
    column's other rules; those follow-on errors are left out of the message (they stay in
    the JSON) because the first sentence already says what to fix.
    """
    missing = {c.column for c in checks if not c.success and c.rule == "present"}
    mistyped = {c.column for c in checks if not c.success and c.rule == "type" and not c.error}
    empty = {c.column for c in checks if not c.success and c.rule == "empty"}
    infinite = {c.column: c.unexpected_count for c in checks if c.rule == "finite"}
    for check in checks:
        if check.success:
            continue
        if check.column in empty and check.rule in ("missing", "classes"):
            continue  # "entirely empty" already says it
        if check.rule == "range" and (check.unexpected_count or 0) <= infinite.get(check.column, 0):
            continue  # only the infinite values are out of range: "finite" names them
        if check.error is not None and (check.column in missing or check.column in mistyped):
            continue
        if check.rule == "columns" and not _undeclared(check):
            continue  # only missing columns: their "present" checks name them
        if check.rule == "present":
            yield _sentence(check) + _look_alike(check.column, checks)
            continue
        yield _sentence(check)


def _look_alike(name: str, checks: list[Check]) -> str:
    """For a missing column: the undeclared columns whose name differs from it only in case
    or surrounding spaces (a header's ``'age '``, a BOM-less ``'Age'``), as a clause."""
    (columns,) = (c for c in checks if c.rule == "columns")
    key = _fold(name)
    alike = [c for c in _undeclared(columns) if _fold(c) == key]
    if not alike:
        return ""
    return (
        f"; the data has {', '.join(repr(c) for c in alike)}, which differs only in "
        f"{_how_alike(name, alike[0])} (rename the column at the source or in the contract)"
    )


def _fold(text: str) -> str:
    """``text`` without what a reader cannot see or does not notice: surrounding spaces, case,
    and Unicode form (an accent stored as a separate mark, NFD, as macOS names files)."""
    return unicodedata.normalize("NFC", text).strip().casefold()


def _how_alike(expected: str, found: str) -> str:
    if unicodedata.normalize("NFC", expected) == unicodedata.normalize("NFC", found):
        return (
            "Unicode form: the same letters, with an accent stored as a separate mark in one "
            "of them (NFD against NFC); normalise the text to NFC"
        )
    return "case or surrounding spaces"


def _category_look_alike(check: Check) -> str:
    """For unknown categories: the examples that equal an allowed category once case,
    surrounding spaces and Unicode form are set aside, as a clause."""
    known = {_fold(c): c for c in check.threshold["categories"]}
    pairs = [(e, known[_fold(e)]) for e in check.examples if _fold(e) in known]
    if not pairs:
        return ""
    found, expected = pairs[0]
    return (
        f"; {found!r} differs from the category {expected!r} only in {_how_alike(expected, found)}"
    )


def _undeclared(check: Check) -> list[str]:
    declared = set(check.threshold["columns"])
    return [c for c in (check.observed or []) if c not in declared]


def _rare(check: Check) -> dict[str, int]:
    need = check.threshold["min_distinct_rows_per_class"]
    known = check.threshold.get("categories")
    return {k: v for k, v in check.observed.items() if v < need and (known is None or k in known)}


def _sentence(check: Check) -> str:
    t, col = check.threshold, f"column '{check.column}'"
    values, eg = _values(check.unexpected_count, check.unexpected_percent), _eg(check.examples)
    if check.rule == "rows":
        if t["min"] is not None and check.observed < t["min"]:
            rows = f"{check.observed} row{'s' if check.observed != 1 else ''}"
            return f"table has {rows}, fewer than the minimum {t['min']}"
        return f"table has {check.observed} rows, more than the maximum {t['max']}"
    if check.rule == "duplicates":
        o = check.observed
        return (
            f"{o['count']} rows ({_pct(100 * o['share'])}) are exact copies of an earlier row, "
            f"more than max_duplicates {t['max_duplicates']} allows (copies usually mean rows "
            "were appended or joined twice, and each copy counts again in training and in the "
            "metrics; remove them at the source, or raise max_duplicates if they are real)"
        )
    if check.rule == "empty":
        return (
            f"{col} is entirely empty (every value is missing), so it cannot be "
            f"{'the target' if t['role'] == 'target' else 'a feature'}; fix the source or set "
            "role: ignored"
        )
    if check.rule == "classes":
        if "min_distinct" in t:
            return f"{col}: the target has {check.observed} distinct value(s); nothing to predict"
        only = ", ".join(f"'{k}'" for k in check.observed) or "none"
        return (
            f"{col}: the target has {len(check.observed)} class ({only}); a classifier needs "
            "at least two"
        )
    if check.rule == "class_spelling":
        return (
            f"{col}: the target's classes {_quoted_groups(check.observed)} differ only "
            "in case, surrounding spaces or a final dot, so a classifier would learn each "
            "spelling as a class of its own; write each class one way at the source (strip "
            "the spaces, one case, no final dot)"
        )
    if check.rule == "class_rows":
        need = t["min_distinct_rows_per_class"]
        rare = ", ".join(f"'{k}' ({v})" for k, v in _rare(check).items())
        return (
            f"{col}: class(es) {rare} have fewer than {need} distinct rows, the least the "
            "stratified split (preprocess.test_size, preprocess.val_size) needs to put one "
            "in each of train, validation and test; add rows or merge the rare classes"
        )
    if check.rule == "columns":
        names = ", ".join(f"'{c}'" for c in _undeclared(check))
        return (
            f"undeclared column(s) {names} not in the contract (the contract must describe "
            "every column: add each one, with role: ignored if it is not used)"
        )
    if check.error is not None and check.rule != "present":
        return f"{col}: the {check.rule} rule could not be checked ({check.error})"
    if check.rule == "present":
        role = t["role"]
        return f"{col} is missing" + {
            "target": " (it is the target)",
            "ignored": " (the contract lists it with role: ignored; remove it there if the "
            "source no longer has it)",
        }.get(role, "")
    if check.rule == "type":
        hint = f"; {check.hint}" if check.hint else ""
        if check.unexpected_count is None:  # decided from the column's dtype
            return f"{col}: expected numeric, found values of type '{check.observed}'{hint}"
        verb = "is not a number" if check.unexpected_count == 1 else "are not numbers"
        return f"{col}: expected numeric, but {values} {verb}{eg}{hint}"
    if check.rule == "finite":
        if all(math.isinf(float(v)) for v in check.examples):
            return (
                f"{col}: {values} infinite{eg}, which no model can use; write them as empty "
                "cells (missing values) or as numbers at the source"
            )
        return (
            f"{col}: {values} infinite or beyond +-{LARGEST_NUMBER:.1e}{eg}, which the exported "
            "model cannot compute with (its graph works in float32); write them as empty cells "
            "(missing values), or rescale the column at the source"
        )
    if check.rule == "missing":
        return f"{col}: {values} missing (allowed {_pct(t['max_missing_percent'])})"
    if check.rule == "range":
        lo, hi = t["min"], t["max"]
        if lo is not None and hi is not None:
            where = f"outside [{lo}, {hi}]"
        else:
            where = f"below {lo}" if lo is not None else f"above {hi}"
        return f"{col}: {values} {where}{eg}"
    if check.rule == "categories":
        listed = [_clip(c) for c in t["categories"][:_LISTED]]
        more = len(t["categories"]) - len(listed)
        allowed = ", ".join(listed) + (f", ... ({len(t['categories'])} in all)" if more else "")
        return (
            f"{col}: {values} not in [{allowed}] (allowed {_pct(t['max_unknown_percent'])}){eg}"
            + _category_look_alike(check)
        )
    raise ValueError(check.rule)


# --------------------------------------------------------------------------- contract inference

#: A text column with more distinct values than this is treated as an identifier or free
#: text and drafted as ``role: ignored`` rather than as a categorical feature.
MAX_CATEGORIES = 50
#: A text target with more than MAX_CATEGORIES values is drafted as classes only when every
#: one has this many rows, what the default split (0.2 / 0.2) needs of each class.
MANY_CLASSES_MIN_ROWS = 5
#: ... and at most this many: beyond it a draft refuses (a contract written by hand may list more).
MAX_DRAFTED_CLASSES = 200
#: An integer-coded target with at most this many distinct values is drafted as class labels
#: (classification); with more, as a quantity (regression).
MAX_INTEGER_CLASSES = 20
#: A text column whose values are at least this share numbers is drafted as numeric (its
#: other values are typos or missing-value markers such as "?", which validate then names).
MOSTLY_NUMBERS = 0.9
#: Numeric bounds are widened by this share of the observed span on each side.
RANGE_MARGIN = 0.1


@dataclass(frozen=True)
class Draft:
    """A drafted contract and, per column, the sentence saying what was decided and why."""

    contract: Contract
    notes: dict[str, str]
    table_notes: tuple[str, ...] = ()


def infer_contract(frame: pd.DataFrame, target: str) -> Contract:
    """Draft a contract describing ``frame``; see :func:`draft_contract`."""
    return draft_contract(frame, target).contract


def draft_contract(frame: pd.DataFrame, target: str) -> Draft:
    """Draft a contract describing ``frame`` (like TFX SchemaGen); a person must review it.

    - Types come from dtypes: numbers are ``numeric`` (integer codes with few values too: they
      keep their order; switch them to categorical if they are labels), text and booleans are
      ``categorical``.
    - Text that is at least ``MOSTLY_NUMBERS`` (90%) numbers is ``numeric``, with a note
      naming the other values (validate refuses them); categories equal but for case,
      surrounding spaces or a final dot get a note.
    - Ignored, each with a note in the draft: a row number (:func:`_row_number`), an
      entirely empty column (nothing to learn, and
      ``max_missing: 1.0`` would hide it), dates and datetimes (as categories they would
      refuse every new date, e.g. next year's rows; derive a number such as the year at the
      source), text with more than ``MAX_CATEGORIES`` distinct values (free text or an id:
      one-hot would make a column per value and refuse unseen ones), other types.
    - The target: text or booleans are classification; integers (or integral floats) with at
      most ``MAX_INTEGER_CLASSES`` distinct values are classification with the codes as
      labels ("0", "1", ...), with more they are regression, as are other numbers. The note
      says which was picked and how to flip it.
    - ``min``/``max``: the observed range widened by 10% of its span on each side, rounded
      outward to a round number, and never below 0 for a column with no negative values.
    - ``categories``: the observed values; ``max_unknown`` 0.
    - ``max_missing``: 0 if nothing is missing, else 1.5 x the observed share rounded up to
      the next percent.
    - ``rows``: from half to ten times the observed row count; ``max_duplicates`` the default
      (0.05), with a note when the sample already holds more copies than that.

    Refuses (PipelineError) a target that is missing, empty or unusable, and a table with no
    usable feature.
    """
    frame = frame.rename(columns=str)
    if target not in frame.columns:
        raise PipelineError(
            f"target column '{target}' is not in the data; columns: {', '.join(frame.columns)}."
            + "".join(
                f" '{c}' differs from it only in case or surrounding spaces."
                for c in frame.columns
                if c.strip().casefold() == target.strip().casefold()
            )
            + headerless_hint(list(frame.columns))
        )
    columns, notes = [], {}
    for name in frame.columns:
        column = frame[name]
        if name == target:
            kind, note = _infer_target(column, name)
            role = "target"
        else:
            kind, role, note = _infer_feature(column)
        if note:
            notes[name] = note
        spec: dict[str, Any] = {"name": name, "type": kind, "role": role}
        # An ignored column never reaches the model: empty cells in it (an id, a signup date
        # not always known) must not stop the pipeline.
        spec["max_missing"] = 1.0 if role == "ignored" else _missing_allowance(column.isna().mean())
        present = column.dropna()
        if role == "feature" and len(present) and present.nunique() == 1:
            notes[name] = _join_notes(
                notes.get(name),
                f"a single value ({_listed(present.head(1).map(_label))}) in this sample: the "
                "model learns nothing from it, and the drafted range or categories admit little "
                "else; set role: ignored if it is always constant",
            )
        if role == "feature":
            for note in _feature_notes(name, kind, column, present):
                notes[name] = _join_notes(notes.get(name), note)
        if kind == "numeric" and role != "ignored" and len(present):
            values = pd.to_numeric(present, errors="coerce").astype(float)
            infinite = _unusable(values)
            finite = values[values.abs() <= LARGEST_NUMBER]
            if len(infinite) and np.isinf(infinite).all():
                notes[name] = _join_notes(
                    notes.get(name),
                    f"{len(infinite)} infinite value(s) ({_listed(infinite.map(str))}): the "
                    "range is drafted from the finite values, and validate refuses infinite "
                    "ones (no model can use them); write them as empty cells (missing) or as "
                    "numbers at the source",
                )
            elif len(infinite):
                notes[name] = _join_notes(
                    notes.get(name),
                    f"{len(infinite)} value(s) infinite or beyond +-{LARGEST_NUMBER:.1e} "
                    f"({_listed(infinite.map(str))}): the range is drafted from the others, "
                    "and validate refuses these (the exported model computes in float32); "
                    "write them as empty cells (missing) or rescale the column at the source",
                )
            if len(finite):
                spec["min"], spec["max"] = _widen(
                    float(finite.min()), float(finite.max()), _integral(finite)
                )
        if kind == "categorical" and role != "ignored":
            spec["categories"] = _ordered({_label(v) for v in present})
            spelt = _spelt_apart(spec["categories"])
            if spelt:
                notes[name] = _join_notes(
                    notes.get(name),
                    f"{spelt} differ only in case, surrounding spaces or a final dot: probably "
                    "one value written several ways (the model takes each as a "
                    + (
                        "class of its own, so validate refuses them: rule class_spelling"
                        if role == "target"
                        else "category of its own"
                    )
                    + "); unify them at the source",
                )
            markers = [c for c in spec["categories"] if looks_missing(c)]
            if markers:
                notes[name] = _join_notes(
                    notes.get(name),
                    f"{_listed(pd.Series(markers))} may mark a missing value: to read "
                    f"{'it' if len(markers) == 1 else 'them'} as missing, list "
                    f"{'it' if len(markers) == 1 else 'them'} in data.missing_values in "
                    "params.yaml exactly as written (spaces too) and draft again; otherwise "
                    f"{'it is' if len(markers) == 1 else 'each is'} a "
                    f"{'class' if role == 'target' else 'category'} of its own",
                )
        columns.append(ColumnSpec(**spec))
    if not any(c.role == "feature" for c in columns):
        why = "; ".join(f"'{n}': {notes.get(n, 'ignored')}" for n in frame.columns if n != target)
        raise PipelineError(
            f"no usable feature: every column other than the target '{target}' would be "
            f"ignored ({why or 'there are none'}). A contract needs at least one feature."
        )
    n = len(frame)
    share = _duplicate_share(frame)
    table_notes = ()
    if share > DEFAULT_MAX_DUPLICATES:
        table_notes = (
            f"{share:.1%} of the rows are exact copies of an earlier row; max_duplicates is "
            f"the default {DEFAULT_MAX_DUPLICATES}, so validate refuses this table until the "
            "copies are removed at the source or max_duplicates is raised on purpose",
        )
    contract = Contract(
        columns=tuple(columns),
        min_rows=max(1, n // 2),
        max_rows=max(1, n) * 10,
        max_duplicates=DEFAULT_MAX_DUPLICATES,
    )
    contract = parse_contract(contract.to_dict(), Path("<inferred>"))  # the same checks as a file
    return Draft(contract, notes, table_notes)


#: From this share of missing cells on, the draft says so (they are filled in at preprocess).
NOTED_MISSING_SHARE = 0.10


def _feature_notes(name: str, kind: str, column: pd.Series, present: pd.Series) -> list[str]:
    """What a feature drafted as it is may hide: a column the header left without a name
    (pandas names it ``Unnamed: 2``), whole numbers all distinct like an id, many missing
    cells ('N/A' is one of pandas' missing markers)."""
    notes = []
    if re.fullmatch(r"Unnamed: \d+", name):
        notes.append(
            "the header line gives this column no name (pandas calls it so), and the model and "
            "the server would take it under this one: name it in the header at the source"
        )
    if (
        kind == "numeric"
        and len(present) >= ROW_NUMBER_MIN_ROWS
        and _integral(present)
        and present.is_unique
        and float(pd.to_numeric(present).abs().max()) < 2**53  # ids, not overflowing numbers
        and not _years(present)
    ):
        notes.append(
            f"a different whole number in each of its {len(present)} rows, like an identifier "
            "(a customer or order id): if it is one, set role: ignored, since it says which row "
            "it is, not anything about it"
        )
    share = float(column.isna().mean())
    if share >= NOTED_MISSING_SHARE:
        filled = "the median" if kind == "numeric" else "the most frequent category"
        notes.append(
            f"{share:.0%} of its values are missing in this sample (empty cells, and markers "
            "such as 'NA' or 'N/A' that pandas reads as missing); preprocess fills them in "
            f"with {filled} of the training rows"
        )
    return notes


def _years(present: pd.Series) -> bool:
    """Whole numbers that all read as years of the calendar (1800 to 2100)."""
    if not len(present) or not _integral(present):
        return False
    values = pd.to_numeric(present)
    return bool(values.min() >= 1800 and values.max() <= 2100)


#: Fewer rows than this, and consecutive distinct integers may well be a real quantity.
ROW_NUMBER_MIN_ROWS = 50


def _row_number(present: pd.Series) -> bool:
    """Integers, each value once, from the smallest to the largest without a gap: the index
    ``to_csv`` writes (``Unnamed: 0``), ``PassengerId``, ``Id``; not years (1956 to 2010, one
    row each, is a time trend: :func:`_years`)."""
    if len(present) < ROW_NUMBER_MIN_ROWS or not _integral(present) or _years(present):
        return False
    values = pd.to_numeric(present)
    # Python floats: 1e308 - -1e308 is inf without numpy's overflow warning.
    span = float(values.max()) - float(values.min())
    return bool(values.is_unique and span + 1 == len(values))


def _ordered(labels: set[str]) -> tuple[str, ...]:
    """Categories in a draft: integer codes by value ("2" before "10"), other text as text."""
    if all(re.fullmatch(r"-?\d+", v) for v in labels):
        return tuple(sorted(labels, key=int))
    return tuple(sorted(labels))


def _spelt_groups(categories: Iterable[str]) -> list[list[str]]:
    """Groups of categories equal once case, surrounding spaces and a final dot are dropped
    (``' >50K'`` and ``' >50K.'``, ``'Male'`` and ``'male'``)."""
    groups: dict[str, list[str]] = {}
    for category in categories:
        groups.setdefault(category.strip().rstrip(".").strip().casefold(), []).append(category)
    return [g for g in groups.values() if len(g) > 1]


def _spelt_apart(categories: Iterable[str]) -> str:
    """:func:`_spelt_groups`, quoted, or ``''``."""
    return _quoted_groups(_spelt_groups(categories))


def _quoted_groups(groups: list[list[str]]) -> str:
    """At most three groups, as ``'a' and 'A'; 'b' and 'B'``."""
    return "; ".join(" and ".join(repr(_clip(c)) for c in g) for g in groups[:3])


def _join_notes(first: str | None, second: str) -> str:
    return second if not first else f"{first}. Also: {second}"


def _listed(values: pd.Series, most: int = 3) -> str:
    """Up to ``most`` distinct values, quoted and cut to 40 characters each."""
    distinct = list(dict.fromkeys(values))
    shown = ", ".join(repr(_clip(str(v))) for v in distinct[:most])
    return shown + (", ..." if len(distinct) > most else "")


def _clip(text: str, width: int = 40) -> str:
    return text if len(text) <= width else f"{text[: width - 3]}... ({len(text)} characters)"


def _label(value: Any) -> str:
    """Category text as ``preprocess`` makes it; integral floats (2.0 from a CSV) as "2"."""
    return category_label(value)


def _integral(present: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(present):
        return False
    if pd.api.types.is_integer_dtype(present):
        return True
    values = pd.to_numeric(present, errors="coerce")
    return bool(pd.api.types.is_float_dtype(values) and (values % 1 == 0).all())


def _is_number(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _looks_like_dates(column: pd.Series) -> bool:
    """Text whose every value is an ISO date or datetime (``2008-01-01``, ``2008-01-01T10:00``)."""
    present = column.dropna().astype(str)
    if present.empty or not present.str.match(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}.*)?$").all():
        return False
    return bool(pd.to_datetime(present, errors="coerce", format="ISO8601").notna().all())


def _infer_target(column: pd.Series, name: str) -> tuple[str, str | None]:
    present = column.dropna()
    if present.empty:
        raise PipelineError(f"target column '{name}' is entirely empty; nothing to predict.")
    distinct = present.nunique()
    if distinct < 2:
        raise PipelineError(
            f"target column '{name}' has a single value ({_label(present.iloc[0])!r}); "
            "nothing to predict."
        )
    if _is_number(column):
        rarest = present.value_counts()
        if _integral(present) and distinct <= MAX_INTEGER_CLASSES and rarest.min() < 3:
            value, times = rarest.index[-1], int(rarest.iloc[-1])
            return "numeric", (
                f"integer target with {distinct} distinct values, but {_label(value)!r} occurs "
                f"only {times} time(s): too few to be a class (a stratified split needs at "
                "least 3 rows of each), so drafted as REGRESSION. If the numbers are codes of "
                "classes, set type: categorical with categories and give each class more rows"
            )
        if _integral(present) and distinct <= MAX_INTEGER_CLASSES:
            labels = ", ".join(f'"{v}"' for v in _ordered({_label(v) for v in present})[:5])
            return "categorical", (
                f"integer-coded target with {distinct} distinct values: drafted as "
                f"CLASSIFICATION with categories {labels}{', ...' if distinct > 5 else ''}. "
                "If the numbers are quantities, make it regression: type: numeric, remove "
                "categories, add min/max"
            )
        return "numeric", (
            f"numeric target with {distinct} distinct values: drafted as REGRESSION. To "
            "classify instead, set type: categorical and list the classes under categories"
        )
    if distinct > MAX_CATEGORIES:
        counts = present.map(_label).value_counts()
        rare = int((counts < MANY_CLASSES_MIN_ROWS).sum())
        if distinct > MAX_DRAFTED_CLASSES:
            raise PipelineError(
                f"target column '{name}' holds text with {distinct} distinct values, more than "
                f"the {MAX_DRAFTED_CLASSES} classes a draft takes (each class adds trees or "
                "outputs to every model): more like free text or an identifier. If it is a "
                "class label, write its categories in the contract yourself; if it is a number "
                "stored as text, convert it at the source."
            )
        if rare:
            raise PipelineError(
                f"target column '{name}' holds text with {distinct} distinct values, {rare} of "
                f"them in fewer than {MANY_CLASSES_MIN_ROWS} rows: more like free text or an "
                "identifier than classes, so no contract is drafted for it. If it is a class "
                "label, write its categories in the contract yourself (validate asks for "
                f"{MANY_CLASSES_MIN_ROWS} distinct rows per class with the default split); if "
                "it is a number stored as text, convert it at the source."
            )
        return "categorical", (
            f"text target with {distinct} distinct values, each in at least "
            f"{MANY_CLASSES_MIN_ROWS} rows: drafted as CLASSIFICATION with {distinct} classes"
        )
    return "categorical", None


def _infer_feature(column: pd.Series) -> tuple[str, str, str | None]:
    """``(type, role, note)`` for a non-target column."""
    present = column.dropna()
    if present.empty:
        return (
            "numeric" if _is_number(column) else "categorical",
            "ignored",
            (
                "entirely empty in this sample: ignored (a feature needs values; max_missing: 1.0 "
                "would only hide it). If it will be filled, give it a type and role: feature"
            ),
        )
    if pd.api.types.is_bool_dtype(column):
        return (
            "categorical",
            "feature",
            (
                "booleans: drafted as the categories 'False' and 'True'; the server takes "
                "true/false or those strings"
            ),
        )
    if _is_number(column):
        if _row_number(present):
            return (
                "numeric",
                "ignored",
                (
                    f"a row number or identifier (every value distinct, {_label(present.min())} "
                    f"to {_label(present.max())} without a gap): ignored, since it says which "
                    "row it is, not anything about it. If it is a real quantity, set "
                    "role: feature"
                ),
            )
        return "numeric", "feature", None
    if pd.api.types.is_datetime64_any_dtype(column) or _looks_like_dates(column):
        return (
            "categorical",
            "ignored",
            (
                "dates: ignored. As categories they would refuse every new date (next year's "
                "rows) and the model cannot use a date as it is; if it matters, derive a number "
                "at the source (e.g. the year) and declare that as numeric"
            ),
        )
    if pd.api.types.is_string_dtype(column) or column.dtype == object:
        numbers = pd.to_numeric(present.map(str), errors="coerce")
        text = present[numbers.isna()]
        commas = text.map(lambda v: is_comma_number(str(v)))
        kind, setting = comma_reading(text[commas].map(str).tolist())
        if setting and numbers.notna().sum() + commas.sum() >= MOSTLY_NUMBERS * len(present):
            others = text[~commas]
            if not len(others):
                return (
                    "numeric",
                    "feature",
                    (
                        f"numbers with {kind} ({_listed(text[commas].map(str))}): drafted as "
                        f"numeric; set {setting} in params.yaml so that they are read as "
                        "numbers, then draft the contract again for their range"
                    ),
                )
            hint = reading_hint(text.map(str).tolist()) or (
                f"set {setting} in params.yaml and fix those values at the source (an empty "
                "cell is a missing value): a column is read as numbers only when every value "
                "is one"
            )
            return (
                "numeric",
                "feature",
                (
                    f"numbers with {kind} ({_listed(text[commas].map(str))}) and {len(others)} "
                    f"of {len(present)} values that are not numbers ({_listed(others.map(str))})"
                    f": drafted as numeric; {hint}, then draft the contract again for their range"
                ),
            )
        if len(text) and numbers.notna().mean() >= MOSTLY_NUMBERS:
            return (
                "numeric",
                "feature",
                (
                    f"numbers, but {len(text)} of {len(present)} values are not "
                    f"({_listed(text.map(str))}): drafted as numeric, so validate refuses "
                    "those values until they are fixed at the source (an empty cell is a "
                    "missing value)"
                    + (f"; {hint}" if (hint := reading_hint(text.map(str).tolist())) else "")
                    + ". If the column is a category, make it type: categorical and list its "
                    "categories"
                ),
            )
        distinct = present.nunique()
        if distinct > MAX_CATEGORIES:
            return (
                "categorical",
                "ignored",
                (
                    f"free text or an identifier ({distinct} distinct values in {len(present)} "
                    "rows): ignored, since one-hot encoding would make a column per value and "
                    "refuse every unseen one"
                ),
            )
        return "categorical", "feature", None
    return "categorical", "ignored", f"values of type {column.dtype}: ignored"


def _missing_allowance(share: float) -> float:
    if share == 0:
        return 0.0
    return min(1.0, math.ceil(share * 150 - 1e-9) / 100)


def _widen(lo: float, hi: float, integer: bool) -> tuple[float, float]:
    span = hi - lo if hi > lo else max(abs(lo), 1.0)
    margin = RANGE_MARGIN * span
    if not all(map(math.isfinite, (span, lo - margin, hi + margin))):
        return lo, hi  # values near the largest float (1e308): no room left to widen
    step = 10 ** math.floor(math.log10(span)) / 10  # a round number a tenth of the span's size
    if integer:
        step = max(step, 1.0)
    low = math.floor((lo - margin) / step) * step
    high = math.ceil((hi + margin) / step) * step
    if lo >= 0:
        low = max(low, 0.0)
    digits = max(0, -math.floor(math.log10(step)))
    return round(low, digits), round(high, digits)


#: The contract format, written at the top of every draft so the draft documents itself
#: (data/contract.yaml carries the same text).
CONTRACT_FORMAT = """\
# Per column:
#   type:        numeric | categorical
#   role:        feature (default) | target | ignored   (exactly one target; a numeric
#                target makes a regression task, a categorical one classification)
#   max_missing: largest allowed share of missing values (0.0 = none allowed); a column
#                whose every value is missing is refused whatever this says
#   min / max:   numeric range, inclusive (optional)
#   categories:  allowed values of a categorical column
#   max_unknown: largest allowed share of values outside `categories` (default 0.0)
#   leakage_ok:  true if this feature may predict the target alone (default false; else
#                the gate fails when validate names it a leakage suspect)
# Table:
#   rows: {min, max}     row-count bounds
#   max_duplicates:      largest allowed share of rows that are exact copies of an earlier
#                        row (default 0.05)
#   leakage_threshold:   one-feature score (balanced accuracy, or R^2 for regression) at
#                        which validate names a feature a leakage suspect (default 0.98)
"""

_INFERRED_HEADER = """\
# Data contract DRAFTED by `python -m pipeline.stages.validate infer` from {source} ({rows} rows).
# REVIEW IT BEFORE COMMITTING: it describes this sample, not what the data should be.
#  - types come from dtypes: numbers are numeric (integer codes too; make them categorical
#    if they are labels), text and booleans are categorical, text that is at least 90%
#    numbers is numeric; empty columns, dates, row numbers, text with more than {maxcat}
#    distinct values and other types are role: ignored, each with a "# NOTE" saying why;
#  - the target: text is classification; integers with at most {maxint} distinct values
#    are classification with the codes as labels, other numbers regression (see its NOTE);
#  - min/max are the observed range widened by 10% of its span, rounded outward;
#  - categories are the values seen; max_unknown is 0 (raise it to tolerate new values);
#  - max_missing is 1.5x the share seen, rounded up to a percent (0 where none were missing),
#    and 1.0 for an ignored column (the model never reads it);
#  - rows allow from half to ten times the rows seen.
#
{format}
"""


def render_draft(draft: Draft, source: str, rows: int) -> str:
    """The draft as YAML with its header and one ``# NOTE`` comment per decided column."""
    header = _INFERRED_HEADER.format(
        source=source,
        rows=rows,
        maxcat=MAX_CATEGORIES,
        maxint=MAX_INTEGER_CLASSES,
        format=CONTRACT_FORMAT,
    )
    raw = draft.contract.to_dict()
    columns = raw.pop("columns")
    lines = [header]
    for note in draft.table_notes:
        lines.append(_comment(note, ""))
    lines.append(yaml.safe_dump(raw, sort_keys=False))
    lines.append("columns:\n")
    for name, entry in columns.items():
        if name in draft.notes:
            lines.append(_comment(draft.notes[name], "  "))
        body = yaml.safe_dump({name: entry}, sort_keys=False, allow_unicode=True)
        lines.append("".join(f"  {line}\n" for line in body.splitlines()))
    return "".join(lines)


def _comment(text: str, indent: str) -> str:
    import textwrap

    wrapped = textwrap.wrap(f"NOTE: {text}.", width=92 - len(indent))
    return "".join(f"{indent}# {line}\n" for line in wrapped)


# --------------------------------------------------------------------------- command line


def _failure_message(report: ValidationReport, contract_path: str, out: Path) -> str:
    """One paragraph: a line naming the contract, then one line per broken rule."""
    rules = len(report.failures)
    return (
        f"the data breaks {rules} rule{'s' if rules != 1 else ''} of the contract "
        f"'{contract_path}':\n  "
        + ";\n  ".join(report.failures)
        + f".\n  Details: {out / 'result.json'} and {out / 'data_docs' / 'index.html'}."
    )


def _read_data(path: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise PipelineError(f"data file '{path}' does not exist; run the ingest stage first.")
    try:
        return read_table(path)
    except Exception as exc:  # pyarrow raises several types; the message is what matters
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"data file '{path}' could not be read as Parquet: {reason}") from None


def _validate_command(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.stages.validate",
        description="Check the raw table against the data contract with Great Expectations.",
        epilog=(
            "To draft a contract from data.source: python -m pipeline.stages.validate infer --help"
        ),
    )
    parser.add_argument("--params", required=True, help="params.yaml (data.contract)")
    parser.add_argument("--data", required=True, help="raw table (Parquet)")
    parser.add_argument("--out", required=True, help="directory for result.json and data_docs/")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    contract = load_contract(params.data.contract)
    frame = _read_data(args.data)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        need = min_rows_per_class(params.preprocess.test_size, params.preprocess.val_size)
        report = validate_table(frame, contract, tmp / "data_docs", min_class_rows=need)
        write_json(tmp / "result.json", {"contract": params.data.contract, **report.to_dict()})
    if not report.success:  # the result and the Data Docs are written first, so people can look
        raise PipelineError(_failure_message(report, params.data.contract, out))
    print(
        f"validate: {report.rows} rows pass {len(report.checks)} checks of "
        f"'{params.data.contract}' -> {out / 'result.json'}, {out / 'data_docs' / 'index.html'}"
    )


def _infer_command(argv: list[str]) -> None:
    from pipeline.sources import ingest

    parser = argparse.ArgumentParser(
        prog="python -m pipeline.stages.validate infer",
        description="Draft a data contract from data.source, for a person to review.",
    )
    parser.add_argument("--params", required=True, help="params.yaml (data.source)")
    parser.add_argument("--target", required=True, help="the column to predict")
    parser.add_argument("--out", required=True, help="contract YAML to write")
    parser.add_argument(
        "--force", action="store_true", help="replace --out if it exists (make: FORCE=1)"
    )
    args = parser.parse_args(argv)

    out = Path(args.out)
    if out.exists() and not args.force:
        raise PipelineError(
            f"'{out}' already exists and may be a reviewed contract; a draft does not replace "
            "it silently. Write the draft elsewhere (OUT=data/contract.inferred.yaml) and "
            "compare, or replace it on purpose with FORCE=1 (--force): the draft carries the "
            "format documentation in its own header."
        )
    params = load_params(args.params)
    frame = ingest(params.data.source, **params.data.read_options())
    draft = draft_contract(frame, args.target)
    with atomic_path(out) as tmp:
        tmp.write_text(render_draft(draft, params.data.source, len(frame)))
    load_contract(out)  # what was written is a contract the pipeline accepts
    contract = draft.contract
    task = contract.task.value
    print(
        f"validate infer: drafted a {task} contract for {len(contract.columns)} columns "
        f"({len(contract.features)} feature{'' if len(contract.features) == 1 else 's'}) of "
        f"{params.data.source} -> {out}; "
        "review it before committing."
    )
    for name, note in draft.notes.items():
        print(f"  {name}: {note}.")
    for note in draft.table_notes:
        print(f"  table: {note}.")


@cli("validate")
def main(argv: list[str] | None = None) -> None:
    """``python -m pipeline.stages.validate [infer] ...``: validate the raw table, or draft a
    contract."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["infer"]:
        _infer_command(argv[1:])
    else:
        _validate_command(argv)


if __name__ == "__main__":
    raise SystemExit(main())
