"""The validate stage: a real GX checkpoint built from the contract, on small in-memory frames."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline.contract import (
    Contract,
    dump_contract,
    load_contract,
    min_rows_per_class,
    parse_contract,
)
from pipeline.errors import PipelineError
from pipeline.stages.validate import (
    CONTRACT_FORMAT,
    _nearest,
    draft_contract,
    infer_contract,
    main,
    validate_table,
)


def _with_column(contract: Contract, name: str, **changes) -> Contract:
    """The contract with one column's spec changed."""
    columns = tuple(
        dataclasses.replace(c, **changes) if c.name == name else c for c in contract.columns
    )
    return dataclasses.replace(contract, columns=columns)


def _failed(report) -> set[tuple[str | None, str]]:
    return {(c.column, c.rule) for c in report.checks if not c.success}


def _params(tmp_path, repo_root, source: str = "builtin:penguins") -> str:
    """A params file whose contract path is absolute, so tests can run from any cwd."""
    text = (repo_root / "params.yaml").read_text()
    text = text.replace("contract: data/contract.yaml", f"contract: {repo_root}/data/contract.yaml")
    text = text.replace("source: builtin:penguins", f"source: {source}")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------- the core


def test_penguins_pass_the_repo_contract(penguins, contract):
    report = validate_table(penguins, contract)
    assert report.success, report.failures
    assert report.failures == ()
    assert report.rows == 344
    assert all(c.success and c.error is None for c in report.checks)
    # three table checks, then per column: present, missing, and type+range or categories;
    # "empty" for the 7 used columns, "finite" for the 4 numeric ones, "classes",
    # "class_spelling" and "class_rows" for the target
    assert len(report.checks) == 3 + 8 * 2 + 5 * 2 + 3 + 7 + 4 + 3
    bill = {c.rule: c for c in report.checks if c.column == "bill_length_mm"}
    assert list(bill) == ["present", "type", "finite", "empty", "missing", "range"]
    assert bill["missing"].unexpected_count == 2
    assert bill["missing"].threshold == {"max_missing_percent": 5.0}
    assert bill["range"].threshold == {"min": 25.0, "max": 70.0}


def test_missing_target_column(penguins, contract):
    report = validate_table(penguins.drop(columns=["species"]), contract)
    assert not report.success
    assert report.failures == ("column 'species' is missing (it is the target)",)
    # GX could not evaluate the column's other rules; they are recorded, not repeated
    assert ("species", "categories") in _failed(report)


def test_missing_feature_column(penguins, contract):
    report = validate_table(penguins.drop(columns=["bill_depth_mm"]), contract)
    assert report.failures == ("column 'bill_depth_mm' is missing",)


def test_numeric_column_of_text_is_named(penguins, contract):
    frame = penguins.assign(body_mass_g=penguins["body_mass_g"].astype(str))
    report = validate_table(frame, contract)
    (failure,) = report.failures
    assert failure.startswith("column 'body_mass_g': expected numeric, found values of type 'str'")


def test_numbers_stored_as_text_are_named_as_such(penguins, contract):
    frame = penguins.dropna(subset=["body_mass_g"])
    frame = frame.assign(body_mass_g=frame["body_mass_g"].map(lambda v: f"{v:.0f}"))
    assert validate_table(frame, contract).failures == (
        "column 'body_mass_g': expected numeric, found values of type 'str'; every value is a "
        "number written as text (a string column in a Parquet file): store the column as "
        "numbers at the source, e.g. pandas' pd.to_numeric(df[column]) before writing it",
    )


def test_numeric_column_with_some_text_values(penguins, contract):
    column = penguins["bill_depth_mm"].astype(object)
    column[[3, 10]] = ["abc", "n/a"]
    report = validate_table(penguins.assign(bill_depth_mm=column), contract)
    assert report.failures == (
        "column 'bill_depth_mm': expected numeric, but 2 values (0.6%) are not numbers, "
        "e.g. 'abc', 'n/a'",
    )


def test_out_of_range_values(penguins, contract):
    frame = penguins.copy()
    frame.loc[[0, 1, 2], "bill_length_mm"] = [999.0, 5.0, 71.0]
    report = validate_table(frame, contract)
    assert report.failures == (
        "column 'bill_length_mm': 3 values (0.9%) outside [25.0, 70.0], e.g. 999.0, 5.0, 71.0",
    )
    (check,) = [c for c in report.checks if not c.success]
    assert check.unexpected_count == 3
    assert check.unexpected_percent == pytest.approx(100 * 3 / 342)  # of the non-missing values


def test_unknown_category_beyond_tolerance(penguins, contract):
    frame = penguins.copy()
    frame.loc[:40, "island"] = "Mars"
    report = validate_table(frame, contract)
    assert report.failures == (
        "column 'island': 41 values (11.9%) not in [Biscoe, Dream, Torgersen] (allowed 0.0%), "
        "e.g. 'Mars'",
    )


def test_unknown_category_within_tolerance_passes(penguins, contract):
    tolerant = _with_column(contract, "island", max_unknown=0.05)
    frame = penguins.copy()
    frame.loc[:4, "island"] = "Atlantis"  # 5 of 344 = 1.5%
    report = validate_table(frame, tolerant)
    assert report.success, report.failures
    (island,) = [c for c in report.checks if c.column == "island" and c.rule == "categories"]
    assert island.unexpected_count == 5
    assert island.threshold["max_unknown_percent"] == 5.0


def test_target_admits_no_unknown_class_whatever_the_contract_says(penguins, contract):
    lax = _with_column(contract, "species", max_unknown=0.5)
    frame = penguins.copy()
    frame.loc[0, "species"] = "Emperor"
    report = validate_table(frame, lax)
    assert report.failures == (
        "column 'species': 1 value (0.3%) not in [Adelie, Chinstrap, Gentoo] (allowed 0.0%), "
        "e.g. 'Emperor'",
    )


def test_integer_coded_categories_are_compared_as_text(penguins, contract):
    coded = _with_column(contract, "island", categories=("0", "1", "2"))
    codes = penguins["island"].map({"Biscoe": 0, "Dream": 1, "Torgersen": 2})
    frame = penguins.assign(island=codes)
    assert validate_table(frame, coded).success
    assert frame["island"].dtype == "int64"  # the caller's frame is not changed


def test_too_few_rows(penguins, contract):
    report = validate_table(penguins.dropna().sample(50, random_state=0), contract)
    assert report.failures == ("table has 50 rows, fewer than the minimum 100",)
    one = validate_table(penguins.iloc[[0]], contract)
    assert one.failures[0] == "table has 1 row, fewer than the minimum 100"


def test_too_many_rows(penguins, contract):
    report = validate_table(penguins, dataclasses.replace(contract, max_rows=300))
    assert report.failures == ("table has 344 rows, more than the maximum 300",)


def test_too_many_missing_values(penguins, contract):
    frame = penguins.copy()
    frame.loc[:69, "sex"] = None
    missing = int(frame["sex"].isna().sum())
    report = validate_table(frame, contract)
    assert report.failures == (
        f"column 'sex': {missing} values ({100 * missing / 344:.1f}%) missing (allowed 5.0%)",
    )


def test_undeclared_column_fails_and_is_named(penguins, contract):
    report = validate_table(penguins.assign(colour="blue", ring_id=1), contract)
    assert not report.success
    assert report.failures == (
        "undeclared column(s) 'colour', 'ring_id' not in the contract (the contract must describe "
        "every column: add each one, with role: ignored if it is not used)",
    )


def test_several_failures_are_all_named_in_column_order(penguins, contract):
    frame = penguins.drop(columns=["sex"])
    frame.loc[0, "flipper_length_mm"] = 1000.0
    frame.loc[:9, "island"] = "Mars"
    failures = validate_table(frame, contract).failures
    assert [f.split(":")[0].split(" is ")[0] for f in failures] == [
        "column 'island'",
        "column 'flipper_length_mm'",
        "column 'sex'",
    ]


def test_data_docs_are_written_where_asked(penguins, contract, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    validate_table(penguins, contract, tmp_path / "docs")
    assert (tmp_path / "docs" / "index.html").is_file()
    assert list((tmp_path / "docs" / "validations" / "data_contract").rglob("*.html"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]  # no gx/ project folder


def _wide_frame() -> tuple[pd.DataFrame, Contract]:
    """24 numeric features and a target: 4 parts (table, x00-x09, x10-x19, x20-target)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"x{i:02d}": rng.normal(size=30) for i in range(24)})
    frame["target"] = rng.choice(["a", "b"], size=30)
    contract = infer_contract(frame, "target")
    frame.loc[:1, "x03"] = 1e6  # in the second part: the child's
    frame.loc[5, "x15"] = -1e6  # in the third: the parent's
    return frame, contract


_TWO_PROCESSES = """
import json, sys, threading
from pathlib import Path
import pipeline.stages.validate as v
from tests.unit.test_validate import _wide_frame

v.PARALLEL_MIN_PARTS = 3  # (default 6)
threads = threading.active_count()  # 1, or it would not fork
report = v.validate_table(*_wide_frame(), Path("docs"))
base = Path("docs", "validations")
pages = sorted(p.relative_to(base).parts[0] for p in base.rglob("*.html"))  # suite names
json.dump({"threads": threads, "report": report.to_dict(), "pages": pages}, sys.stdout)
"""


def test_a_wide_table_validated_in_two_processes_reports_what_one_process_does(
    tmp_path, repo_root, monkeypatch
):
    """Every second part of the suite runs in a forked child; its results merge exactly.

    The forked run is in a fresh interpreter, so that no thread another test left behind
    stops the fork."""
    proc = subprocess.run(
        [sys.executable, "-c", _TWO_PROCESSES],
        cwd=tmp_path,
        env={"PYTHONPATH": str(repo_root)},
        capture_output=True,
        text=True,
        check=True,
    )
    forked = json.loads(proc.stdout)
    assert forked["threads"] == 1  # so it did fork
    monkeypatch.setattr("pipeline.stages.validate.PARALLEL_MIN_PARTS", 10**6)
    serial = validate_table(*_wide_frame(), tmp_path / "serial")
    assert forked["report"] == json.loads(json.dumps(serial.to_dict()))
    failures = [f.split(":")[0] for f in forked["report"]["failures"]]
    assert failures == ["column 'x03'", "column 'x15'"]
    base = tmp_path / "serial" / "validations"
    pages = sorted(p.relative_to(base).parts[0] for p in base.rglob("*.html"))
    assert forked["pages"] == pages and len(pages) == 4  # one Data Docs page per part


# --------------------------------------------------------------------------- the CLI


def test_cli_writes_result_and_docs(penguins, tmp_path, monkeypatch, repo_root, capsys):
    monkeypatch.chdir(tmp_path)
    penguins.to_parquet(tmp_path / "raw.parquet", index=False)
    params = _params(tmp_path, repo_root)
    code = main(["--params", params, "--data", "raw.parquet", "--out", "reports/validation"])
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "reports" / "validation"
    result = json.loads((out / "result.json").read_text())
    assert result["success"] is True
    assert result["failures"] == []
    assert result["rows"] == 344
    range_check = next(
        c for c in result["checks"] if c["column"] == "bill_length_mm" and c["rule"] == "range"
    )
    assert range_check["threshold"] == {"min": 25.0, "max": 70.0}
    assert range_check["unexpected_percent"] == 0.0
    assert (out / "data_docs" / "index.html").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["data_docs", "result.json"]
    assert not (tmp_path / "gx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "raw.parquet", "reports"]
    assert "344 rows pass 46 checks" in capsys.readouterr().out


def test_cli_failure_writes_result_then_exits_1(penguins, tmp_path, monkeypatch, repo_root, capsys):
    monkeypatch.chdir(tmp_path)
    frame = penguins.copy()
    frame.loc[[0, 1, 2], "bill_length_mm"] = 999.0
    frame.to_parquet(tmp_path / "raw.parquet", index=False)
    out = tmp_path / "validation"
    (out / "data_docs").mkdir(parents=True)
    (out / "data_docs" / "stale.html").write_text("from an earlier run")
    code = main(
        ["--params", _params(tmp_path, repo_root), "--data", "raw.parquet", "--out", "validation"]
    )
    err = capsys.readouterr().err
    assert code == 1
    contract = f"{repo_root}/data/contract.yaml"
    assert err == (
        f"validate failed: the data breaks 1 rule of the contract '{contract}':\n"
        "  column 'bill_length_mm': 3 values (0.9%) outside [25.0, 70.0], e.g. 999.0.\n"
        "  Details: validation/result.json and validation/data_docs/index.html.\n"
    )
    assert "Traceback" not in err
    result = json.loads((out / "result.json").read_text())
    assert result["success"] is False
    assert result["failures"] == [
        "column 'bill_length_mm': 3 values (0.9%) outside [25.0, 70.0], e.g. 999.0"
    ]
    assert (out / "data_docs" / "index.html").is_file()
    assert not (out / "data_docs" / "stale.html").exists()  # the output is replaced whole


def test_cli_missing_data_file_is_a_clear_error(tmp_path, repo_root, capsys):
    out = tmp_path / "validation"
    code = main(
        [
            "--params",
            _params(tmp_path, repo_root),
            "--data",
            str(tmp_path / "no.parquet"),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "no.parquet' does not exist" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_import_is_light_and_has_no_side_effects(tmp_path, repo_root):
    code = (
        "import sys, pipeline.stages.validate; "
        "print('great_expectations' in sys.modules, 'tensorflow' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(repo_root)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.split() == ["False", "False"]
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- infer


def test_infer_drafts_the_penguins_contract(penguins):
    inferred = infer_contract(penguins, "species")
    assert inferred.target == "species"
    assert inferred.target_spec.categories == ("Adelie", "Chinstrap", "Gentoo")
    assert inferred.categorical_features == ["island", "sex"]
    assert inferred.numeric_features == [
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "year",  # integer columns stay numeric
    ]
    bill = inferred.column("bill_length_mm")  # observed 32.1 .. 59.6, 2 of 344 missing
    assert (bill.min, bill.max, bill.max_missing) == (29.0, 63.0, 0.01)
    mass = inferred.column("body_mass_g")  # observed 2700 .. 6300
    assert (mass.min, mass.max) == (2300.0, 6700.0)
    year = inferred.column("year")  # observed 2007 .. 2009, integers
    assert (year.min, year.max, year.max_missing) == (2006.0, 2010.0, 0.0)
    sex = inferred.column("sex")  # 11 of 344 missing = 3.2%
    assert (sex.categories, sex.max_missing, sex.max_unknown) == (("female", "male"), 0.05, 0.0)
    assert (inferred.min_rows, inferred.max_rows) == (172, 3440)


def test_infer_round_trips_and_validates_the_same_data(penguins, tmp_path):
    inferred = infer_contract(penguins, "species")
    path = tmp_path / "contract.yaml"
    path.write_text(dump_contract(inferred))
    assert load_contract(path) == inferred
    report = validate_table(penguins, load_contract(path))
    assert report.success, report.failures


def test_infer_policies_for_other_column_kinds():
    n = 120
    frame = pd.DataFrame(
        {
            "label": ["yes", "no"] * (n // 2),
            "flag": [True, False, True] * (n // 3),
            "customer_id": [f"c{i:04d}" for i in range(n)],
            "seen": pd.date_range("2024-01-01", periods=n, freq="D"),
            "score": [-1.5 + 0.05 * i for i in range(n)],
        }
    )
    inferred = infer_contract(frame, "label")
    assert inferred.column("flag").type == "categorical"
    assert inferred.column("flag").categories == ("False", "True")
    assert draft_contract(frame, "label").notes["flag"] == (
        "booleans: drafted as the categories 'False' and 'True'; the server takes true/false or "
        "those strings"
    )
    assert inferred.column("customer_id").role == "ignored"  # 120 distinct strings
    assert inferred.column("customer_id").categories is None
    assert inferred.column("seen").role == "ignored"  # not numeric or text
    score = inferred.column("score")  # -1.5 .. 4.45 may go below 0
    assert (score.min, score.max) == (-2.1, 5.1)
    assert validate_table(frame, inferred).success


def test_infer_needs_a_target_present_and_usable(penguins):
    with pytest.raises(PipelineError, match="target column 'kind' is not in the data; columns: "):
        infer_contract(penguins, "kind")
    with pytest.raises(PipelineError, match=r"year\. ' Species' differs from it only in case"):
        infer_contract(penguins.rename(columns={"species": " Species"}), "species")
    with pytest.raises(PipelineError, match="target column 'island' has a single value"):
        infer_contract(penguins.assign(island="Dream"), "island")
    with pytest.raises(PipelineError, match="target column 'sex' is entirely empty"):
        infer_contract(penguins.assign(sex=None), "sex")


def test_infer_a_many_valued_numeric_target_is_regression_and_says_how_to_flip(penguins):
    draft = draft_contract(penguins, "body_mass_g")
    assert draft.contract.task.value == "regression"
    target = draft.contract.target_spec
    assert (target.type, target.min, target.max, target.categories) == (
        "numeric",
        2300.0,
        6700.0,
        None,
    )
    assert draft.notes["body_mass_g"].startswith(
        "numeric target with 94 distinct values: drafted as REGRESSION. To classify instead"
    )


def test_infer_an_integer_coded_target_is_classification_and_says_so():
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True).frame
    draft = draft_contract(iris, "target")
    assert draft.contract.task.value == "multiclass"
    assert draft.contract.target_spec.categories == ("0", "1", "2")
    assert draft.notes["target"] == (
        "integer-coded target with 3 distinct values: drafted as CLASSIFICATION with "
        'categories "0", "1", "2". If the numbers are quantities, make it regression: '
        "type: numeric, remove categories, add min/max"
    )
    assert validate_table(iris, draft.contract).success


def test_infer_ignores_dates_free_text_and_empty_columns_and_says_why(penguins):
    frame = penguins.assign(
        model_year=penguins["year"].map(lambda y: f"{y}-01-01"),  # ISO dates, 3 distinct
        seen_at=pd.to_datetime(penguins["year"].map(lambda y: f"{y}-06-30 12:00")),
        comment=[f"penguin number {i} looked well" for i in range(len(penguins))],
        tag=float("nan"),
    )
    draft = draft_contract(frame, "species")
    contract = draft.contract
    for name in ("model_year", "seen_at", "comment", "tag"):
        assert contract.column(name).role == "ignored", name
    assert draft.notes["model_year"].startswith("dates: ignored. As categories they would")
    assert draft.notes["seen_at"] == draft.notes["model_year"]
    assert draft.notes["comment"].startswith("free text or an identifier (344 distinct values")
    assert draft.notes["tag"].startswith("entirely empty in this sample: ignored")
    assert all(c.max_missing < 1.0 for c in contract.features)
    # next year's rows pass: the date is not a category with max_unknown 0
    next_year = frame.assign(model_year="2010-01-01", seen_at=pd.Timestamp("2010-06-30"))
    assert validate_table(next_year, contract).success
    # nor do empty cells in them: the model never reads an ignored column
    assert {contract.column(n).max_missing for n in ("model_year", "seen_at", "comment")} == {1.0}
    unknown = next_year.copy()
    unknown.loc[:9, ["model_year", "seen_at", "comment"]] = None
    assert validate_table(unknown, contract).success


def test_infer_refuses_a_table_with_no_usable_feature():
    frame = pd.DataFrame(
        {
            "label": ["a", "b"] * 60,
            "note": [f"free text number {i}" for i in range(120)],
            "empty": [None] * 120,
        }
    )
    with pytest.raises(PipelineError, match="no usable feature: every column other than the ") as e:
        infer_contract(frame, "label")
    assert "'empty': entirely empty in this sample" in str(e.value)
    assert "'note': free text or an identifier" in str(e.value)


def test_infer_notes_a_sample_full_of_copies(penguins):
    draft = draft_contract(pd.concat([penguins] * 10, ignore_index=True), "species")
    assert draft.contract.max_duplicates == 0.05
    assert draft.table_notes[0].startswith("90.0% of the rows are exact copies")


def test_infer_cli_writes_a_reviewable_contract(penguins, tmp_path, monkeypatch, repo_root, capsys):
    monkeypatch.chdir(tmp_path)
    penguins.assign(model_year=penguins["year"].map(lambda y: f"{y}-01-01")).to_parquet(
        tmp_path / "mine.parquet", index=False
    )
    params = _params(tmp_path, repo_root, source="mine.parquet")
    out = tmp_path / "data" / "contract.inferred.yaml"
    code = main(["infer", "--params", params, "--target", "species", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    text = out.read_text()
    assert text.startswith("# Data contract DRAFTED by `python -m pipeline.stages.validate infer`")
    assert "REVIEW IT BEFORE COMMITTING" in text
    assert CONTRACT_FORMAT in text  # the draft documents its own format
    assert "  # NOTE: dates: ignored. As categories they would refuse every new date" in text
    assert load_contract(out) == infer_contract(pd.read_parquet("mine.parquet"), "species")
    printed = capsys.readouterr().out
    assert "drafted a multiclass contract for 9 columns (7 features)" in printed
    assert "review it before committing" in printed
    assert "  model_year: dates: ignored." in printed


def test_infer_cli_does_not_overwrite_a_contract_without_force(tmp_path, repo_root, capsys):
    out = tmp_path / "contract.yaml"
    out.write_text("# a reviewed contract\n")
    params = _params(tmp_path, repo_root)
    args = ["infer", "--params", params, "--target", "species", "--out", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"validate failed: '{out}' already exists and may be a reviewed")
    assert "FORCE=1" in err
    assert out.read_text() == "# a reviewed contract\n"
    assert main([*args, "--force"]) == 0
    assert load_contract(out).target == "species"


def test_the_repo_contract_documents_the_format_the_drafts_carry(repo_root):
    assert CONTRACT_FORMAT in (repo_root / "data" / "contract.yaml").read_text()


def test_infer_cli_unknown_target_exits_1(tmp_path, repo_root, capsys):
    out = tmp_path / "c.yaml"
    params = _params(tmp_path, repo_root)
    assert main(["infer", "--params", params, "--target", "kind", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("validate failed: target column 'kind' is not in the data")
    assert not out.exists()


# --------------------------------------------------------------------------- data-quality rules


def test_an_entirely_empty_column_is_refused_whatever_max_missing_says(penguins, contract):
    frame = penguins.assign(body_mass_g=float("nan"))
    lax = _with_column(contract, "body_mass_g", max_missing=1.0)
    report = validate_table(frame, lax)
    assert not report.success
    assert report.failures == (
        "column 'body_mass_g' is entirely empty (every value is missing), so it cannot be a "
        "feature; fix the source or set role: ignored",
    )
    # an ignored column may be empty: nothing reads it
    ignored = _with_column(lax, "body_mass_g", role="ignored")
    assert validate_table(frame, ignored).success


def test_a_one_class_target_is_refused(penguins, contract):
    report = validate_table(penguins[penguins["species"] == "Gentoo"], contract)
    assert report.failures == (
        "column 'species': the target has 1 class ('Gentoo'); a classifier needs at least two",
    )


def test_classes_too_small_for_the_split_are_named(penguins, contract):
    frame = pd.concat([penguins[penguins["species"] != "Chinstrap"], penguins.iloc[[152, 153]]])
    frame.loc[frame.index[-2:], "species"] = "Chinstrap"
    report = validate_table(frame, contract, min_class_rows=5)
    assert report.failures == (
        "column 'species': class(es) 'Chinstrap' (2) have fewer than 5 distinct rows, the least "
        "the stratified split (preprocess.test_size, preprocess.val_size) needs to put one in "
        "each of train, validation and test; add rows or merge the rare classes",
    )
    # copies of a row are one row to the split (duplicates never straddle it)
    copies = pd.concat([frame] + [frame.tail(2)] * 3)
    assert not validate_table(copies, contract, min_class_rows=5).success


def test_rows_per_class_follow_the_split_sizes():
    assert min_rows_per_class(0.2, 0.2) == 5  # the smallest split, 20%, gets one row in 5
    assert min_rows_per_class(0.1, 0.1) == 10
    assert min_rows_per_class(0.3, 0.3) == 4  # train 40%, val and test 30%: 1 / 0.3 -> 4
    assert min_rows_per_class(0.5, 0.45) == 20  # train gets 5%


def test_a_numeric_target_validates_with_range_and_missing_rules(penguins):
    raw = {
        "columns": {
            "body_mass_g": {"type": "numeric", "role": "target", "min": 2500, "max": 6500},
            "flipper_length_mm": {"type": "numeric", "max_missing": 0.05},
            "island": {"type": "categorical", "categories": ["Biscoe", "Dream", "Torgersen"]},
        }
    }
    contract = parse_contract(raw)
    frame = penguins[["body_mass_g", "flipper_length_mm", "island"]].dropna()
    report = validate_table(frame, contract)
    assert report.success, report.failures
    target_rules = [c.rule for c in report.checks if c.column == "body_mass_g"]
    assert target_rules == ["present", "type", "finite", "empty", "missing", "range", "classes"]
    frame.loc[frame.index[:3], "body_mass_g"] = 9000.0
    assert validate_table(frame, contract).failures == (
        "column 'body_mass_g': 3 values (0.9%) outside [2500.0, 6500.0], e.g. 9000.0",
    )
    constant = frame.assign(body_mass_g=4000.0)  # (which makes many rows alike)
    lax = dataclasses.replace(contract, max_duplicates=1.0)
    assert validate_table(constant, lax).failures == (
        "column 'body_mass_g': the target has 1 distinct value(s); nothing to predict",
    )


def test_duplicate_rows_beyond_max_duplicates_are_refused(penguins, contract):
    report = validate_table(penguins, contract)
    assert report.duplicates == {"share": 0.0, "max": 0.05}
    tenfold = pd.concat([penguins] * 10, ignore_index=True)
    report = validate_table(tenfold, contract)
    assert report.duplicates == {"share": 0.9, "max": 0.05}
    assert report.failures == (
        "3096 rows (90.0%) are exact copies of an earlier row, more than max_duplicates 0.05 "
        "allows (copies usually mean rows were appended or joined twice, and each copy counts "
        "again in training and in the metrics; remove them at the source, or raise "
        "max_duplicates if they are real)",
    )
    lax = dataclasses.replace(contract, max_duplicates=0.95)
    assert validate_table(tenfold, lax).success


def _label_in_range(penguins: pd.DataFrame) -> pd.DataFrame:
    """bill_depth_mm rewritten to encode the species, inside its declared range [10, 25]."""
    code = penguins["species"].map({"Adelie": 0, "Chinstrap": 1, "Gentoo": 2})
    noise = np.random.default_rng(1).uniform(0.0, 2.0, len(penguins))
    return penguins.assign(bill_depth_mm=12.0 + 4.0 * code + noise)


def test_leakage_names_a_feature_that_encodes_the_label_and_does_not_fail(penguins, contract):
    report = validate_table(_label_in_range(penguins), contract)
    assert report.success  # validation reports leakage; the gate decides
    leakage = report.leakage
    assert leakage["threshold"] == 0.98 and leakage["allowed"] == []
    assert leakage["suspects"] == [
        {
            "column": "bill_depth_mm",
            "score": 1.0,
            "metric": "balanced_accuracy_one_feature_knn",
        }
    ]
    allowed = _with_column(contract, "bill_depth_mm", leakage_ok=True)
    assert validate_table(_label_in_range(penguins), allowed).leakage["allowed"] == [
        "bill_depth_mm"
    ]


def test_the_real_penguin_features_are_not_leakage_suspects(penguins, contract):
    leakage = validate_table(penguins, contract).leakage
    assert leakage["suspects"] == []
    assert set(leakage["scores"]) == set(contract.feature_names)
    assert max(leakage["scores"].values()) < 0.85  # island, the best, about 0.78


def test_a_categorical_feature_that_is_the_label_renamed_is_a_suspect(penguins, contract):
    renamed = {"Adelie": "Biscoe", "Chinstrap": "Dream", "Gentoo": "Torgersen"}
    frame = penguins.assign(island=penguins["species"].map(renamed))
    (suspect,) = validate_table(frame, contract).leakage["suspects"]
    assert suspect == {
        "column": "island",
        "score": 1.0,
        "metric": "balanced_accuracy_one_feature_category_majority",
    }


def test_leakage_predicts_a_numeric_value_from_its_k_nearest_training_values():
    x_train = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 12.0, np.nan])
    classes = np.array([0, 0, 0, 1, 1, 1, 1])
    x_test = np.array([1.5, 10.5, 6.9, np.nan, 100.0])
    # 6.9's three nearest are 2, 10, 11; a missing value is predicted by the missing rows
    assert _nearest(x_train, classes, x_test, 3, regression=False).tolist() == [0, 1, 1, 1, 1]
    target = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0, 7.0])
    assert _nearest(x_train, target, x_test, 2, regression=True).tolist() == [
        2.5, 15.0, 15.0, 7.0, 25.0,
    ]  # fmt: skip


def test_the_k_nearest_values_are_the_ones_a_full_sort_finds():
    rng = np.random.default_rng(0)
    for _ in range(100):
        x_train = np.round(rng.normal(size=int(rng.integers(1, 40))), 1)  # ties included
        target = rng.normal(size=len(x_train))
        x_test = np.round(rng.normal(size=20), 1)
        k = int(rng.integers(1, 10))
        got = _nearest(x_train, target, x_test, k, regression=True)
        for value, mean in zip(x_test, got, strict=True):
            distance = np.abs(x_train - value)
            radius = np.sort(distance)[: min(k, len(x_train))].max()
            inner, tied = target[distance < radius], np.sort(target[distance == radius])
            need = min(k, len(x_train)) - len(inner)
            low = (inner.sum() + tied[:need].sum()) / min(k, len(x_train))
            high = (inner.sum() + tied[::-1][:need].sum()) / min(k, len(x_train))
            assert low - 1e-9 <= mean <= high + 1e-9


# --------------------------------------------------------------------------- poisoned cells


def test_infinite_numbers_are_refused_with_or_without_a_range(penguins, contract):
    """A CSV's ``inf`` reads as a float: no range rule may be there to catch it, and
    scikit-learn's imputer refuses the whole table on one."""
    frame = penguins.copy()
    frame.loc[[3, 7], "bill_length_mm"] = [np.inf, -np.inf]
    expected = (
        "column 'bill_length_mm': 2 values (0.6%) infinite, e.g. 'inf', '-inf', which no "
        "model can use; write them as empty cells (missing values) or as numbers at the source",
    )
    assert validate_table(frame, contract).failures == expected  # not also "outside [..]"
    no_range = _with_column(contract, "bill_length_mm", min=None, max=None)
    report = validate_table(frame, no_range)
    assert not report.success
    assert report.failures == expected
    (finite,) = (c for c in report.checks if c.rule == "finite" and c.column == "bill_length_mm")
    assert finite.unexpected_count == 2


def test_numbers_beyond_float32_are_refused_without_a_range(penguins, contract):
    """1e308 (or 1e200) passes a contract without min/max, then overflows: a Keras loss turned
    NaN and train died with a traceback; a ridge regression's metrics went infinite and export
    failed parity. The largest float32 itself is still accepted."""
    frame = penguins.copy()
    frame.loc[[3, 7, 9], "bill_length_mm"] = [1e308, -1e200, np.inf]
    frame.loc[11, "bill_length_mm"] = float(np.finfo(np.float32).max)
    no_range = _with_column(contract, "bill_length_mm", min=None, max=None)
    assert validate_table(frame, no_range).failures == (
        "column 'bill_length_mm': 3 values (0.9%) infinite or beyond +-3.4e+38, e.g. '1e+308', "
        "'-1e+200', 'inf', which the exported model cannot compute with (its graph works in "
        "float32); write them as empty cells (missing values), or rescale the column at the "
        "source",
    )
    frame.loc[[3, 7, 9], "bill_length_mm"] = np.nan
    assert validate_table(frame, no_range).success


def test_infer_drafts_no_range_from_numbers_beyond_float32(penguins):
    frame = penguins.copy()
    frame.loc[3, "body_mass_g"] = 1e308
    draft = draft_contract(frame, "species")
    spec = draft.contract.column("body_mass_g")
    assert spec.max is not None and spec.max < 10_000
    assert draft.notes["body_mass_g"].startswith(
        "1 value(s) infinite or beyond +-3.4e+38 ('1e+308'): the range is drafted from the others"
    )
    assert not validate_table(frame, draft.contract).success


def test_out_of_range_values_beside_infinite_ones_are_still_named(penguins, contract):
    frame = penguins.copy()
    frame.loc[[3, 7], "bill_length_mm"] = [np.inf, 999.0]
    failures = validate_table(frame, contract).failures
    assert failures[0].startswith("column 'bill_length_mm': 1 value (0.3%) infinite, e.g. 'inf'")
    assert failures[1].startswith("column 'bill_length_mm': 2 values (0.6%) outside [25.0, 70.0]")


def test_a_very_long_text_value_is_cut_in_the_message(penguins, contract):
    frame = penguins.astype({"island": object})
    frame.loc[:40, "island"] = "x" * 10_000
    (failure,) = validate_table(frame, contract).failures
    assert failure == (
        "column 'island': 41 values (11.9%) not in [Biscoe, Dream, Torgersen] (allowed 0.0%), "
        "e.g. 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (10000 characters)'"
    )


def test_infer_drafts_the_range_of_the_finite_values_and_notes_infinite_ones(penguins):
    frame = penguins.copy()
    frame.loc[3, "bill_length_mm"] = np.inf
    draft = draft_contract(frame, "species")
    spec = draft.contract.column("bill_length_mm")
    assert (spec.type, spec.min, spec.max) == ("numeric", 29.0, 63.0)
    assert draft.notes["bill_length_mm"].startswith(
        "1 infinite value(s) ('inf'): the range is drafted from the finite values, and "
        "validate refuses infinite ones"
    )
    assert (
        validate_table(frame, draft.contract)
        .failures[0]
        .startswith("column 'bill_length_mm': 1 value (0.3%) infinite")
    )


def test_infer_drafts_a_column_of_numbers_with_a_stray_text_cell_as_numeric(penguins):
    """One typo must not turn a measurement into 300 categories, or into 'free text' that is
    silently ignored; the draft says so and validate names the cell."""
    column = penguins["body_mass_g"].astype(object)
    column[5] = "heavy"
    frame = penguins.assign(body_mass_g=column)
    draft = draft_contract(frame, "species")
    spec = draft.contract.column("body_mass_g")
    assert (spec.type, spec.role, spec.min, spec.max) == ("numeric", "feature", 2300.0, 6700.0)
    assert draft.notes["body_mass_g"].startswith(
        "numbers, but 1 of 342 values are not ('heavy'): drafted as numeric, so validate "
        "refuses those values"
    )
    assert validate_table(frame, draft.contract).failures == (
        "column 'body_mass_g': expected numeric, but 1 value (0.3%) is not a number, e.g. 'heavy'",
    )


def test_infer_notes_categories_spelt_several_ways():
    """Adult census mixes ' >50K' (train file) with ' >50K.' (test file): four classes where
    there are two, unless someone is told."""
    n = 60
    frame = pd.DataFrame(
        {
            "hours": [float(i % 7) for i in range(n)],
            "sex": ["Male", "male", "Female"] * (n // 3),
            "income": [" >50K", " <=50K", " >50K.", " <=50K."] * (n // 4),
        }
    )
    draft = draft_contract(frame, "income")
    assert draft.contract.target_spec.categories == (" <=50K", " <=50K.", " >50K", " >50K.")
    assert draft.notes["income"] == (
        "' <=50K' and ' <=50K.'; ' >50K' and ' >50K.' differ only in case, surrounding spaces "
        "or a final dot: probably one value written several ways (the model takes each as a "
        "class of its own, so validate refuses them: rule class_spelling); unify them at the "
        "source"
    )
    assert draft.notes["sex"].startswith("'Male' and 'male' differ only in case")
    constant = draft_contract(frame.assign(unit="kg"), "income")
    assert constant.contract.column("unit").role == "feature"
    assert constant.notes["unit"].startswith("a single value ('kg') in this sample: the model")
    assert "a category of its own" in draft.notes["sex"]
    assert "hours" not in draft.notes


def test_infer_ignores_a_row_number_and_says_why():
    """``to_csv`` without ``index=False`` writes ``Unnamed: 0``; titanic has ``PassengerId``."""
    n = 100
    frame = pd.DataFrame(
        {
            "Unnamed: 0": range(n),
            "PassengerId": range(1, n + 1),
            "shuffled_id": np.random.default_rng(0).permutation(n) + 500,
            "with_a_gap": [*range(n - 1), n + 5],
            "age": [20 + i % 40 for i in range(n)],
            "y": ["a", "b"] * (n // 2),
        }
    )
    draft = draft_contract(frame, "y")
    roles = {c.name: c.role for c in draft.contract.columns}
    assert roles == {
        "Unnamed: 0": "ignored",
        "PassengerId": "ignored",
        "shuffled_id": "ignored",
        "with_a_gap": "feature",
        "age": "feature",
        "y": "target",
    }
    assert draft.notes["PassengerId"] == (
        "a row number or identifier (every value distinct, 1 to 100 without a gap): ignored, "
        "since it says which row it is, not anything about it. If it is a real quantity, set "
        "role: feature"
    )
    few = frame.head(20)  # too few rows to tell an id from a quantity
    assert draft_contract(few, "y").contract.column("PassengerId").role == "feature"


def test_integer_codes_with_a_gap_pass_the_contract_drafted_from_them():
    """A feature and a target of integer codes, each with a missing value, read from a CSV as
    floats: the draft names the codes "1", "2", and validate must accept its own draft (it
    refused every value, "'1.0' not in [1, 2, 3]")."""
    import io

    n = 120
    rng = np.random.default_rng(0)
    source = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "code": rng.integers(1, 4, n).astype(float),
            "y": rng.integers(0, 2, n).astype(float),
        }
    )
    source.loc[[3, 5], "code"] = np.nan
    source.loc[7, "y"] = np.nan
    frame = pd.read_csv(io.StringIO(source.to_csv(index=False)))
    draft = draft_contract(frame, "y")
    assert draft.contract.target_spec.categories == ("0", "1")
    categorical = dataclasses.replace(
        draft.contract.column("code"), type="categorical", categories=("1", "2", "3"), min=None,
        max=None,
    )  # fmt: skip
    contract = dataclasses.replace(
        draft.contract,
        columns=tuple(categorical if c.name == "code" else c for c in draft.contract.columns),
    )
    report = validate_table(frame, contract)
    assert report.success, report.failures
    (classes,) = (c for c in report.checks if c.rule == "classes")
    assert set(classes.observed) == {"0", "1"}


def test_a_csv_column_of_numbers_with_one_text_cell_names_the_cell(penguins, contract, tmp_path):
    """Read from a CSV, one text cell makes the whole column text: the message must name the
    cell, not the type 'str'."""
    column = penguins["body_mass_g"].astype(object)
    column[5] = "heavy"
    penguins.assign(body_mass_g=column).to_csv(tmp_path / "t.csv", index=False)
    frame = pd.read_csv(tmp_path / "t.csv")
    assert frame["body_mass_g"].dtype != object or frame["body_mass_g"].map(type).eq(str).all()
    assert validate_table(frame, contract).failures == (
        "column 'body_mass_g': expected numeric, but 1 value (0.3%) is not a number, e.g. 'heavy'",
    )


def test_a_missing_column_names_its_look_alike_with_other_spaces_or_case(penguins, contract):
    frame = penguins.rename(columns={"bill_length_mm": "bill_length_mm ", "island": "Island"})
    assert validate_table(frame, contract).failures == (
        "undeclared column(s) 'Island', 'bill_length_mm ' not in the contract (the contract "
        "must describe every column: add each one, with role: ignored if it is not used)",
        "column 'island' is missing; the data has 'Island', which differs only in case or "
        "surrounding spaces (rename the column at the source or in the contract)",
        "column 'bill_length_mm' is missing; the data has 'bill_length_mm ', which differs "
        "only in case or surrounding spaces (rename the column at the source or in the contract)",
    )


def test_names_and_categories_in_another_unicode_form_are_named_as_such(penguins, contract):
    """A decomposed 'é' (NFD, as macOS writes file names) looks the same as the contract's
    composed one: the messages read "column 'étage' is missing; undeclared 'étage'"."""
    import unicodedata

    def nfd(text):
        return unicodedata.normalize("NFD", text)

    accented = _with_column(contract, "island", categories=("Biscoe", "Dréam", "Torgersen"))
    accented = dataclasses.replace(
        accented,
        columns=tuple(
            dataclasses.replace(c, name="îsland") if c.name == "island" else c
            for c in accented.columns
        ),
    )
    frame = penguins.replace({"island": {"Dream": "Dréam"}}).rename(columns={"island": "îsland"})
    assert validate_table(frame, accented).success
    failures = validate_table(frame.rename(columns={"îsland": nfd("îsland")}), accented).failures
    assert failures[1] == (
        f"column 'îsland' is missing; the data has {nfd('îsland')!r}, which differs only in "
        "Unicode form: the same letters, with an accent stored as a separate mark in one of them "
        "(NFD against NFC); normalise the text to NFC (rename the column at the source or in the "
        "contract)"
    )
    values = frame.assign(îsland=frame["îsland"].map(nfd))
    (failure,) = validate_table(values, accented).failures
    assert failure.endswith(
        f"e.g. {nfd('Dréam')!r}; {nfd('Dréam')!r} differs from the category 'Dréam' only in "
        "Unicode form: the same letters, with an accent stored as a separate mark in one of them "
        "(NFD against NFC); normalise the text to NFC"
    )


def test_a_category_with_other_case_or_spaces_names_the_category_it_resembles(penguins, contract):
    frame = penguins.replace({"island": {"Biscoe": " biscoe"}})
    (failure,) = validate_table(frame, contract).failures
    assert failure.startswith("column 'island': 168 values (48.8%) not in [Biscoe, Dream, ")
    assert failure.endswith(
        "e.g. ' biscoe'; ' biscoe' differs from the category 'Biscoe' only in case or "
        "surrounding spaces"
    )


def test_a_missing_value_marker_in_a_number_column_says_which_setting_reads_it(penguins, contract):
    """Heart disease's '?' cells: the message names the cells and data.missing_values."""
    column = penguins["bill_depth_mm"].astype(object)
    column[[3, 10]] = ["?", "?"]
    report = validate_table(penguins.assign(bill_depth_mm=column), contract)
    assert report.failures == (
        "column 'bill_depth_mm': expected numeric, but 2 values (0.6%) are not numbers, "
        "e.g. '?'; if '?' marks a missing value, add it to data.missing_values in params.yaml",
    )
    draft = draft_contract(penguins.assign(bill_depth_mm=column), "species")
    assert draft.notes["bill_depth_mm"] == (
        "numbers, but 2 of 343 values are not ('?'): drafted as numeric, so validate refuses "
        "those values until they are fixed at the source (an empty cell is a missing value); "
        "if '?' marks a missing value, add it to data.missing_values in params.yaml. If the "
        "column is a category, make it type: categorical and list its categories"
    )


def test_decimal_commas_are_drafted_as_numbers_with_the_setting_that_reads_them(penguins):
    column = penguins["bill_depth_mm"].map(
        lambda v: v if pd.isna(v) else f"{v:.1f}".replace(".", ",")
    )
    frame = penguins.assign(bill_depth_mm=column)
    draft = draft_contract(frame, "species")
    spec = draft.contract.column("bill_depth_mm")
    assert (spec.type, spec.role) == ("numeric", "feature")
    assert draft.notes["bill_depth_mm"].startswith("numbers with a decimal comma ('")
    assert draft.notes["bill_depth_mm"].endswith(
        "set data.decimal: ',' in params.yaml so that they are read as numbers, then draft "
        "the contract again for their range"
    )
    failure = validate_table(frame, draft.contract).failures[0]
    assert failure.startswith("column 'bill_depth_mm': expected numeric, but 342 values")
    assert failure.endswith(
        "they look like numbers with a decimal comma: set data.decimal: ',' in params.yaml"
    )


def test_infer_notes_a_category_that_may_mark_a_missing_value():
    """Adult census writes ' ?' for an unknown workclass: a category unless the user says."""
    n = 60
    frame = pd.DataFrame(
        {
            "hours": [float(i % 7) for i in range(n)],
            "workclass": [" Private", " ?", " State-gov"] * (n // 3),
            "income": [" >50K", " <=50K"] * (n // 2),
        }
    )
    draft = draft_contract(frame, "income")
    assert draft.contract.column("workclass").categories == (" ?", " Private", " State-gov")
    assert draft.notes["workclass"] == (
        "' ?' may mark a missing value: to read it as missing, list it in data.missing_values "
        "in params.yaml exactly as written (spaces too) and draft again; otherwise it is a "
        "category of its own"
    )
    assert "income" not in draft.notes
    read = draft_contract(frame.replace(" ?", None), "income")
    # read as missing, ' ?' is no longer a category; the share of missing cells is noted
    assert read.notes["workclass"] == (
        "33% of its values are missing in this sample (empty cells, and markers such as 'NA' or "
        "'N/A' that pandas reads as missing); preprocess fills them in with the most frequent "
        "category of the training rows"
    )


def test_commas_between_thousands_are_drafted_as_numbers_with_the_setting_that_reads_them(
    penguins,
):
    column = penguins["body_mass_g"].map(lambda v: v if pd.isna(v) else f"{v:,.0f}")
    frame = penguins.assign(body_mass_g=column)
    draft = draft_contract(frame, "species")
    assert draft.contract.column("body_mass_g").type == "numeric"
    assert draft.notes["body_mass_g"].startswith("numbers with a comma between thousands ('3,750'")
    assert (
        "set data.thousands: ',' in params.yaml so that they are read" in draft.notes["body_mass_g"]
    )
    failure = validate_table(frame, draft.contract).failures[-1]
    assert failure.endswith(
        "they look like numbers with a comma between thousands: set data.thousands: ',' in "
        "params.yaml"
    ), failure


def test_a_missing_marker_among_decimal_commas_is_named_with_both_settings(penguins):
    """With data.decimal: ',' already set, one '?' keeps the column text (pandas reads numbers
    only when every value is one): infer said only "set data.decimal", validate said nothing,
    and the user went round in circles."""
    column = penguins["bill_depth_mm"].map(
        lambda v: "?" if pd.isna(v) else f"{v:.1f}".replace(".", ",")
    )
    frame = penguins.assign(bill_depth_mm=column)
    draft = draft_contract(frame, "species")
    assert draft.contract.column("bill_depth_mm").type == "numeric"
    note = draft.notes["bill_depth_mm"]
    assert note.startswith("numbers with a decimal comma ('")
    assert "and 2 of 344 values that are not numbers ('?'): drafted as numeric; " in note
    assert note.endswith(
        "they look like numbers with a decimal comma, and '?' like a missing value: set "
        "data.decimal: ',' and add '?' to data.missing_values in params.yaml (a column is read "
        "as numbers only when every value is one), then draft the contract again for their range"
    )
    failure = validate_table(frame, draft.contract).failures[0]
    assert failure.startswith("column 'bill_depth_mm': expected numeric, but 344 values")
    assert failure.endswith(
        "and '?' like a missing value: set data.decimal: ',' and add '?' to "
        "data.missing_values in params.yaml (a column is read as numbers only when every value "
        "is one)"
    )


def test_numbers_near_the_largest_float_get_a_draft_not_an_overflow():
    """``_widen`` overflowed (``OverflowError: cannot convert float infinity to integer``)."""
    frame = pd.DataFrame(
        {
            "x": [float(i) for i in range(60)] + [1e308, -1e308],
            "big": [1.7e308 - i * 1e300 for i in range(62)],
            "y": ["a", "b"] * 31,
        }
    )
    draft = draft_contract(frame, "y")
    # Such numbers overflow the exported model's float32: the draft leaves them out of the
    # range and says so, and validate refuses them (tests above).
    assert (draft.contract.column("x").min, draft.contract.column("x").max) == (0.0, 65.0)
    assert draft.contract.column("big").min is None and draft.contract.column("big").max is None
    assert draft.notes["big"].startswith("62 value(s) infinite or beyond +-3.4e+38")
    assert [f.split(":")[0] for f in validate_table(frame, draft.contract).failures] == [
        "column 'x'",
        "column 'big'",
    ]


def test_a_missing_ignored_column_is_named_in_plain_words(penguins, contract):
    """It said "column 'island' is missing (it is the ignored)"."""
    ignored = _with_column(contract, "island", role="ignored")
    report = validate_table(penguins.drop(columns=["island"]), ignored)
    assert report.failures == (
        "column 'island' is missing (the contract lists it with role: ignored; remove it there "
        "if the source no longer has it)",
    )


def test_an_integer_target_whose_values_are_too_rare_for_classes_is_drafted_as_regression():
    """longley's TOTEMP (16 rows, 16 distinct integers) was drafted as 16 classes, which the
    next run refused: every class had one row."""
    frame = pd.DataFrame({"year": range(16), "TOTEMP": [60171 + 7 * i for i in range(16)]})
    contract = infer_contract(frame, "TOTEMP")
    assert contract.column("TOTEMP").type == "numeric"
    codes = pd.DataFrame({"x": range(30), "grade": [1, 2, 10] * 10})
    assert infer_contract(codes, "grade").column("grade").categories == ("1", "2", "10")


def test_classes_spelt_several_ways_are_refused(penguins):
    """' Adelie' and 'Adelie' trained as two classes: the draft noted it, validate passed, and
    the gate failed on f1 with a hint about the model, not the labels."""
    frame = penguins.copy()
    frame.loc[frame.index[:30], "species"] = " Adelie"
    frame.loc[frame["species"].eq("Gentoo").to_numpy().nonzero()[0][:40], "species"] = "gentoo"
    contract = infer_contract(frame, "species")  # the draft lists every spelling
    assert set(contract.target_spec.categories) == {" Adelie", "Adelie", "Chinstrap", "Gentoo",
                                                    "gentoo"}  # fmt: skip
    report = validate_table(frame, contract)
    assert report.failures == (
        "column 'species': the target's classes ' Adelie' and 'Adelie'; 'Gentoo' and 'gentoo' "
        "differ only in case, surrounding spaces or a final dot, so a classifier would learn "
        "each spelling as a class of its own; write each class one way at the source (strip the "
        "spaces, one case, no final dot)",
    )
    check = next(c for c in report.checks if c.rule == "class_spelling")
    assert check.observed == [[" Adelie", "Adelie"], ["Gentoo", "gentoo"]]
    assert validate_table(penguins, infer_contract(penguins, "species")).success


def test_infer_notes_what_a_feature_may_hide():
    """A nameless column, an id of random whole numbers, 30% 'N/A': drafted as features
    without a word before."""
    rng = np.random.default_rng(0)
    n = 200
    amount = rng.normal(50, 10, n)
    amount[: n * 3 // 10] = np.nan  # 'N/A' in the CSV: pandas reads it as missing
    frame = pd.DataFrame(
        {
            "Unnamed: 1": rng.normal(0, 1, n),
            "customer_id": rng.choice(10**6, n, replace=False),
            "amount": amount,
            "plain": rng.normal(0, 1, n),
            "y": ["a", "b"] * (n // 2),
        }
    )
    draft = draft_contract(frame, "y")
    assert {c.name: c.role for c in draft.contract.columns} == {
        "Unnamed: 1": "feature", "customer_id": "feature", "amount": "feature",
        "plain": "feature", "y": "target",
    }  # fmt: skip
    assert draft.notes["Unnamed: 1"] == (
        "the header line gives this column no name (pandas calls it so), and the model and the "
        "server would take it under this one: name it in the header at the source"
    )
    assert draft.notes["customer_id"] == (
        "a different whole number in each of its 200 rows, like an identifier (a customer or "
        "order id): if it is one, set role: ignored, since it says which row it is, not "
        "anything about it"
    )
    assert draft.notes["amount"] == (
        "30% of its values are missing in this sample (empty cells, and markers such as 'NA' or "
        "'N/A' that pandas reads as missing); preprocess fills them in with the median of the "
        "training rows"
    )
    assert "plain" not in draft.notes and "y" not in draft.notes


def test_infer_drafts_many_text_classes_only_when_each_can_be_split():
    n = 600
    x = np.random.default_rng(1).normal(0, 1, n)
    many = pd.DataFrame({"x": x, "y": [f"c{i % 60}" for i in range(n)]})
    draft = draft_contract(many, "y")
    assert len(draft.contract.target_spec.categories) == 60
    assert draft.notes["y"] == (
        "text target with 60 distinct values, each in at least 5 rows: drafted as "
        "CLASSIFICATION with 60 classes"
    )
    assert validate_table(many, draft.contract).success
    ids = many.assign(y=[f"c{i % 60}" for i in range(n - 3)] + ["x1", "x2", "x3"])
    with pytest.raises(PipelineError) as caught:
        draft_contract(ids, "y")
    assert str(caught.value) == (
        "target column 'y' holds text with 63 distinct values, 3 of them in fewer than 5 rows: "
        "more like free text or an identifier than classes, so no contract is drafted for it. "
        "If it is a class label, write its categories in the contract yourself (validate asks "
        "for 5 distinct rows per class with the default split); if it is a number stored as "
        "text, convert it at the source."
    )
    x = np.random.default_rng(1).normal(0, 1, 1005)
    huge = pd.DataFrame({"x": x, "y": [f"c{i % 201}" for i in range(1005)]})
    with pytest.raises(PipelineError, match="holds text with 201 distinct values, more than the "
                       "200 classes a draft takes"):  # fmt: skip
        draft_contract(huge, "y")


def test_one_row_per_year_stays_a_feature():
    """vega's driving table: gas price by year, 1956 to 2010, one row each. The year was
    ignored as a row number, and the trend with it."""
    years = list(range(1956, 2011))
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"year": years, "miles": rng.normal(0, 1, len(years)),
                          "gas": rng.normal(2, 0.5, len(years))})  # fmt: skip
    draft = draft_contract(frame, "gas")
    assert draft.contract.column("year").role == "feature"
    assert "year" not in draft.notes
    # the same numbers from 0: a row number, ignored as before
    rows = draft_contract(frame.assign(year=range(len(years))), "gas")
    assert rows.contract.column("year").role == "ignored"
