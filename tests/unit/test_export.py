"""The export stage: ONNX and SavedModel parity with the native model, the files it writes, and
the ways it refuses to ship a model that does not compute what was trained.

Models are trained here on the real penguins data with small budgets (few trees, few epochs):
parity does not need a good model, only the same one in every runtime.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import joblib
import numpy as np
import onnx
import pandas as pd
import pytest
import yaml
from onnx import TensorProto, numpy_helper

from model_spec.descriptor import ModelDescriptor
from model_spec.task import Task
from pipeline import onnx_export
from pipeline.config import flatten, load_params
from pipeline.errors import PipelineError
from pipeline.stages.export import (
    UNSEEN_CATEGORY,
    ExportResult,
    Lineage,
    Outputs,
    ParityError,
    check_parity,
    describe_inputs,
    export_model,
    golden_payload,
    golden_rows,
    log_export,
    main,
    parity_failure,
    range_text,
)
from pipeline.stages.preprocess import fit_preprocessor, split_data, to_model_frame
from pipeline.stages.train import NativeModel, train_model
from tests.conftest import REPO_ROOT

FAMILIES = ["logistic_regression", "random_forest", "keras_mlp"]
METRICS = {"accuracy": 0.99, "f1_macro": 0.98, "roc_auc_ovr": 1.0, "log_loss": 0.05, "rows": 69}


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def params():
    p = load_params(REPO_ROOT / "params.yaml")
    train = p.train.with_block("random_forest", n_estimators=25).with_block(
        "keras_mlp", epochs=20, patience=5
    )
    return replace(p, train=train)


@pytest.fixture(scope="module")
def data(contract):
    from palmerpenguins import load_penguins

    splits = split_data(load_penguins(), contract.target, 42, 0.2, 0.2)
    return splits, fit_preprocessor(splits.train, contract)


def edge_rows(test: pd.DataFrame) -> pd.DataFrame:
    """Rows a server will meet: missing numbers, missing strings, unseen categories."""
    base = test.iloc[:4].copy().reset_index(drop=True)
    base.loc[0, ["bill_length_mm", "body_mass_g"]] = np.nan
    base.loc[1, "sex"] = None
    base.loc[2, "island"] = "Atlantis"
    base.loc[3, ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]] = np.nan
    base.loc[3, ["island", "sex"]] = [None, None]
    return base


@pytest.fixture(scope="module")
def test_rows(data) -> pd.DataFrame:
    """The test split plus the edge rows: what parity is checked on in these tests."""
    splits, _ = data
    return pd.concat([splits.test, edge_rows(splits.test)], ignore_index=True)


def _native(estimator, params, data, contract) -> NativeModel:
    splits, pre = data

    def xy(frame):
        return pre.transform(to_model_frame(frame, contract)), frame[contract.target].to_numpy(str)

    result = train_model(estimator, params.train, *xy(splits.train), *xy(splits.val))
    return NativeModel(pre, result.model, result.family, estimator, result.classes, contract)


@pytest.fixture(scope="module")
def trained(params, data, contract):
    """``trained(estimator)``: one fitted model per estimator for the whole module."""
    cache: dict[str, NativeModel] = {}

    def get(estimator: str) -> NativeModel:
        if estimator not in cache:
            cache[estimator] = _native(estimator, params, data, contract)
        return cache[estimator]

    return get


@pytest.fixture(scope="module", params=FAMILIES)
def native(request, trained) -> NativeModel:
    return trained(request.param)


@pytest.fixture(scope="module")
def lineage(params) -> Lineage:
    return Lineage("run-123", "abc123", "0" * 64, flatten(params))


@pytest.fixture(scope="module")
def exported(native, params, test_rows, tmp_path_factory) -> tuple[Path, ExportResult]:
    out = tmp_path_factory.mktemp(f"export-{native.estimator_name}") / "export"
    p = replace(params, train=replace(params.train, estimator=native.estimator_name))
    lineage = Lineage("run-123", "abc123", "0" * 64, flatten(p))
    return out, export_model(native, p, test_rows, METRICS, lineage, out)


def _perturbed(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with the scaler's means shifted by 10 %: a plausible converter bug."""
    model = copy.deepcopy(model)
    offsets = {node.input[1] for node in model.graph.node if node.op_type == "Sub"}
    for init in model.graph.initializer:
        if init.name in offsets and init.data_type == TensorProto.DOUBLE:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.1, init.name))
            return model
    raise AssertionError("no scaler offset found in the graph")


# ---------------------------------------------------------------------------- ONNX graph
def test_onnx_graph_has_the_documented_interface(native, contract, params):
    model = onnx_export.to_onnx(native, params.export.opset)
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(inputs) == contract.feature_names
    for name, tensor in inputs.items():
        expected = TensorProto.DOUBLE if name in contract.numeric_features else TensorProto.STRING
        assert tensor.elem_type == expected, name
        assert [d.dim_value for d in tensor.shape.dim] == [0, 1]  # [N, 1]
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert list(outputs) == ["label", "probabilities"]
    assert outputs["label"].elem_type == TensorProto.STRING
    assert outputs["probabilities"].elem_type == TensorProto.FLOAT
    assert [d.dim_value for d in outputs["probabilities"].shape.dim] == [0, 3]
    assert {o.domain: o.version for o in model.opset_import}[""] == params.export.opset
    assert json.loads(helper_props(model)["classes"]) == native.classes


def helper_props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def test_onnx_reproduces_native_with_missing_values_and_unseen_categories(
    native, contract, test_rows, params
):
    session = onnx_export.onnx_session(onnx_export.to_onnx(native, params.export.opset))
    labels, proba = onnx_export.run_onnx(session, to_model_frame(test_rows, contract), contract)
    expected = native.predict_proba(test_rows)
    assert proba.dtype == np.float32 and proba.shape == expected.shape
    assert np.abs(proba - expected).max() <= params.export.parity_tolerance
    assert list(labels) == list(native.predict(test_rows))
    # The edge rows are the last four; an unseen category is all zeros, not an error.
    edge = np.abs(proba[-4:] - expected[-4:]).max()
    assert edge <= params.export.parity_tolerance


def test_onnx_single_row_matches_batch(native, contract, test_rows, params):
    session = onnx_export.onnx_session(onnx_export.to_onnx(native, params.export.opset))
    frame = to_model_frame(test_rows, contract)
    _, batch = onnx_export.run_onnx(session, frame, contract)
    for i in (0, len(frame) - 1):
        _, one = onnx_export.run_onnx(session, frame.iloc[[i]], contract)
        np.testing.assert_allclose(one[0], batch[i], atol=1e-7)


def test_random_forest_needs_the_float32_cast_before_the_trees(params, trained, data, contract):
    """Without the cast the trees compare double features with float32 thresholds.

    Rows whose values also occur in training sit right at split points, so all 344 rows are
    probed; the uncast graph is off by 0.04 there (measured), the shipped one by ~1e-7.
    """
    from skl2onnx import convert_sklearn
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    forest = trained("random_forest")
    shipped = onnx_export.onnx_session(onnx_export.to_onnx(forest, params.export.opset))
    naive = convert_sklearn(
        Pipeline([("preprocess", forest.preprocessor), ("model", forest.model)]),
        initial_types=onnx_export.input_types(contract),
        target_opset={"": params.export.opset, "ai.onnx.ml": onnx_export.ML_OPSET},
        options={id(forest.model): {"zipmap": False}},
        custom_conversion_functions={SimpleImputer: onnx_export._convert_simple_imputer},
    )
    splits, _ = data
    rows = pd.concat([splits.train, splits.val, splits.test], ignore_index=True)
    frame, expected = to_model_frame(rows, contract), forest.predict_proba(rows)
    _, good = onnx_export.run_onnx(shipped, frame, contract)
    _, bad = onnx_export.onnx_session(naive).run(None, onnx_export.onnx_feeds(frame, contract))
    assert np.abs(good - expected).max() <= params.export.parity_tolerance
    assert np.abs(bad - expected).max() > params.export.parity_tolerance


# ---------------------------------------------------------------------------- SavedModel
def test_saved_model_reproduces_native(params, trained, contract, test_rows, tmp_path):
    from pipeline import tf_export

    network = trained("keras_mlp")
    tf_export.write_saved_model(network, tmp_path / "saved_model")
    serve = tf_export.load_saved_model(tmp_path / "saved_model")
    inputs = serve.structured_input_signature[1]
    assert sorted(inputs) == sorted(contract.feature_names)
    assert inputs["bill_length_mm"].dtype.name == "float64"
    assert inputs["island"].dtype.name == "string"
    assert inputs["island"].shape.as_list() == [None]
    assert set(serve.structured_outputs) == {"label", "probabilities"}

    frame = to_model_frame(test_rows, contract)
    labels, proba = tf_export.run_saved_model(serve, frame, contract.numeric_features)
    expected = network.predict_proba(test_rows)
    assert np.abs(proba - expected).max() <= params.export.parity_tolerance
    assert list(labels) == list(network.predict(test_rows))


def test_saved_model_refuses_a_transformer_it_cannot_express(params, data, contract):
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import MinMaxScaler

    from pipeline import tf_export

    splits, _ = data
    other = ColumnTransformer([("num", MinMaxScaler(), contract.numeric_features)])
    other.fit(to_model_frame(splits.train, contract).dropna())
    with pytest.raises(PipelineError, match=r"found transformer 'num' \(MinMaxScaler\)"):
        tf_export.preprocessing_plan(other)


# ---------------------------------------------------------------------------- stage outputs
def test_export_writes_every_artifact(exported, native, contract, params):
    out, result = exported
    expected = {"model.onnx", "model.json", "golden.json", "model_card.md"}
    if native.family == "keras":
        expected.add("saved_model")
        assert (out / "saved_model" / "saved_model.pb").is_file()
    assert {p.name for p in out.iterdir()} == expected
    assert result.parity["passed"] is True
    assert result.parity["rows"] == 69 + 4
    runtimes = {"onnxruntime", "tensorflow"} if native.family == "keras" else {"onnxruntime"}
    assert set(result.parity["runtimes"]) == runtimes
    for report in result.parity["runtimes"].values():
        assert report["label_mismatches"] == 0
        assert report["max_abs_diff"] <= params.export.parity_tolerance
    assert result.parity["golden"]["passed"] is True


def test_descriptor_fields(exported, native, contract, params):
    out, _ = exported
    d = json.loads((out / "model.json").read_text())
    assert d["schema_version"] == 2
    assert d["task"] == "multiclass"
    typed = ModelDescriptor.read(out)  # every reader reads it this way
    assert typed.task is Task.MULTICLASS and typed.input_names == contract.feature_names
    assert d["name"] == "penguins-classifier"  # registry.model_name: auto, from the data
    assert (d["estimator"], d["family"]) == (native.estimator_name, native.family)
    assert d["onnx"] == {
        "file": "model.onnx",
        "opset": params.export.opset,
        "inputs": contract.feature_names,
        "outputs": ["label", "probabilities"],
    }
    if native.family == "keras":
        assert d["saved_model"] == {"dir": "saved_model", "signature": "serving_default"}
    else:
        assert d["saved_model"] is None
    by_name = {spec["name"]: spec for spec in d["inputs"]}
    assert by_name["island"] == {
        "name": "island",
        "onnx_name": "island",
        "kind": "categorical",
        "dtype": "string",
        "nullable": False,
        "categories": ["Biscoe", "Dream", "Torgersen"],
    }
    assert by_name["bill_length_mm"] == {
        "name": "bill_length_mm",
        "onnx_name": "bill_length_mm",
        "kind": "numeric",
        "dtype": "float64",
        "nullable": True,
        "min": 25.0,
        "max": 70.0,
    }
    assert by_name["sex"]["nullable"] is True
    assert d["target"] == "species"
    assert d["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert d["metrics"] == {k: v for k, v in METRICS.items() if k != "rows"}
    assert d["parity"]["passed"] is True
    assert d["parity"]["tolerance"] == params.export.parity_tolerance
    assert 0 <= d["parity"]["max_abs_diff"] <= params.export.parity_tolerance
    assert d["lineage"]["run_id"] == "run-123"
    assert d["lineage"]["git_commit"] == "abc123"
    assert d["lineage"]["data_sha256"] == "0" * 64
    assert d["lineage"]["params"]["export.opset"] == params.export.opset
    assert d["lineage"]["params"]["train.estimator"] == native.estimator_name


def test_golden_rows_cover_missing_values_and_an_unseen_category(exported, params):
    out, _ = exported
    golden = json.loads((out / "golden.json").read_text())
    assert golden["tolerance"] == params.export.parity_tolerance
    rows = golden["rows"]
    assert len(rows) == params.export.golden_rows
    assert any(None in row["inputs"].values() for row in rows)
    assert any(row["inputs"]["island"] == UNSEEN_CATEGORY for row in rows)
    cases = [row["case"] for row in rows]
    assert cases[-2].startswith("synthetic: missing") and cases[-1].startswith("synthetic: unseen")
    for row in rows:
        assert row["label"] in ["Adelie", "Chinstrap", "Gentoo"]
        assert sum(row["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_model_card_has_every_section(exported, native):
    out, result = exported
    card = (out / "model_card.md").read_text()
    for heading in ("Intended use", "Inputs", "Metrics on the test split", "Parity"):
        assert f"## {heading}" in card
    assert "## Limitations" in card and "## Lineage" in card
    assert "run-123" in card and "| onnxruntime |" in card
    assert f"`{native.estimator_name}`" in card
    assert ("TensorFlow SavedModel" in card) == (native.family == "keras")


def test_the_model_card_says_what_range_a_contract_without_bounds_gives():
    assert range_text(25.0, 70.0) == "25.0 to 70.0"
    assert range_text(0.0, None) == "at least 0.0"
    assert range_text(None, 9.5) == "at most 9.5"
    assert range_text(None, None) == "any number (no range in the contract)"  # was "None to None"


GOLDEN_REPLAY = r"""
import json, sys
import numpy as np
import onnxruntime as ort

model_dir = sys.argv[1]
golden = json.load(open(model_dir + "/golden.json"))
session = ort.InferenceSession(model_dir + "/model.onnx", providers=["CPUExecutionProvider"])

def feeds(rows):
    out = {}
    for spec in session.get_inputs():
        values = [row["inputs"][spec.name] for row in rows]
        if spec.type == "tensor(double)":
            column = [np.nan if v is None else v for v in values]
            out[spec.name] = np.array(column, dtype=np.float64).reshape(-1, 1)
        else:
            column = ["" if v is None else v for v in values]
            out[spec.name] = np.array(column, dtype=object).reshape(-1, 1)
    return out

rows = golden["rows"]
labels, proba = session.run(["label", "probabilities"], feeds(rows))
single = [session.run(["label", "probabilities"], feeds([row])) for row in rows]
expected = np.array([row["probabilities"] for row in rows])
loaded = ("sklearn", "tensorflow", "keras", "mlflow", "skl2onnx", "pandas", "pipeline")
print(json.dumps({
    "labels": [str(v) for v in labels],
    "single_labels": [str(s[0][0]) for s in single],
    "max_abs_diff": float(np.abs(proba - expected).max()),
    "single_max_abs_diff": float(max(np.abs(s[1][0] - e).max() for s, e in zip(single, expected))),
    "loaded": sorted(m for m in loaded if m in sys.modules),
}))
"""


def test_onnxruntime_alone_reproduces_the_golden_rows(exported):
    out, result = exported
    proc = subprocess.run(
        [sys.executable, "-I", "-c", GOLDEN_REPLAY, str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    replay = json.loads(proc.stdout)
    expected_labels = [row["label"] for row in result.golden["rows"]]
    assert replay["loaded"] == []
    assert replay["labels"] == expected_labels == replay["single_labels"]
    assert replay["max_abs_diff"] <= result.golden["tolerance"]
    assert replay["single_max_abs_diff"] <= result.golden["tolerance"]


# ---------------------------------------------------------------------------- parity failures
def test_perturbed_onnx_graph_fails_parity_naming_row_and_difference(
    native, contract, test_rows, params
):
    session = onnx_export.onnx_session(_perturbed(onnx_export.to_onnx(native, 17)))
    runtime = Outputs(*onnx_export.run_onnx(session, to_model_frame(test_rows, contract), contract))
    proba = native.predict_proba(test_rows)
    reference = Outputs(np.asarray(native.predict(test_rows), dtype=str), proba)
    report = check_parity(reference, {"onnxruntime": runtime}, native.classes, 1e-5)
    result = report["runtimes"]["onnxruntime"]
    assert report["passed"] is False and result["passed"] is False
    diff = np.abs(runtime.probabilities - proba)
    assert result["max_abs_diff"] == pytest.approx(diff.max())
    assert result["worst_row"] == int(np.unravel_index(diff.argmax(), diff.shape)[0])
    message = parity_failure(report, "test split")
    assert message.startswith("parity failed on the test split (73 rows, tolerance 1e-05): ")
    assert f"onnxruntime differs from the native model by {result['max_abs_diff']:.3e}" in message
    assert f"at row {result['worst_row']} (probability of '{result['worst_class']}'" in message


def test_label_mismatch_alone_fails_parity():
    native = Outputs(np.array(["a", "b"]), np.array([[0.5, 0.5], [0.2, 0.8]]))
    runtime = Outputs(np.array(["b", "b"]), np.array([[0.5, 0.5], [0.2, 0.8]], dtype=np.float32))
    report = check_parity(native, {"onnxruntime": runtime}, ["a", "b"], 1e-5)
    assert report["runtimes"]["onnxruntime"]["mismatched_rows"] == [0]
    assert "1 row(s) get a different label (rows 0)" in parity_failure(report, "test split")


def test_wrong_shape_and_nan_fail_parity():
    native = Outputs(np.array(["a"]), np.array([[0.4, 0.6]]))
    nan = Outputs(np.array(["a"]), np.array([[np.nan, 0.6]], dtype=np.float32))
    narrow = Outputs(np.array(["a"]), np.array([[1.0]], dtype=np.float32))
    report = check_parity(native, {"nan": nan, "narrow": narrow}, ["a", "b"], 1e-5)
    assert report["runtimes"]["nan"]["max_abs_diff"] == float("inf")
    assert (
        report["runtimes"]["narrow"]["error"] == "probabilities have shape [1, 1], expected [1, 2]"
    )
    assert report["passed"] is False


def test_export_model_raises_and_writes_nothing_when_parity_fails(
    native, params, test_rows, lineage, tmp_path, monkeypatch
):
    real = onnx_export.to_onnx
    monkeypatch.setattr(onnx_export, "to_onnx", lambda n, opset: _perturbed(real(n, opset)))
    from pipeline.io import atomic_path

    target = tmp_path / "export"
    with (
        pytest.raises(ParityError, match=r"onnxruntime differs .* at row \d+") as caught,
        atomic_path(target) as tmp,
    ):
        export_model(native, params, test_rows, METRICS, lineage, tmp)
    assert caught.value.report["passed"] is False
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- golden selection
def test_golden_rows_prefer_missing_then_spread_over_confidence(contract, data):
    splits, _ = data
    test = pd.concat([splits.test, edge_rows(splits.test)], ignore_index=True)
    confidence = np.linspace(1.0, 0.4, len(test))
    frame, cases = golden_rows(test, contract, 8, confidence)
    assert len(frame) == len(cases) == 8
    # Rows in test order: only rows the input rules accept (71 has an unseen island and 72 a
    # missing one, which the contract forbids), so the two with allowed missing values, then
    # the complete rows spread from the most sure (0) to the least sure (68).
    assert cases[:6] == [
        "test row 0",
        "test row 23",
        "test row 45",
        "test row 68",
        "test row 69, missing bill_length_mm, body_mass_g",
        "test row 70, missing sex",
    ]
    assert frame.loc[6, "island"] == test.loc[0, "island"]  # island is not nullable
    assert frame.loc[6, ["sex", "bill_length_mm"]].isna().all()
    assert frame.loc[7, "island"] == frame.loc[7, "sex"] == UNSEEN_CATEGORY


def test_golden_rows_of_a_table_without_missing_values_never_set_a_feature_to_null():
    """Item 8: breast_cancer has no missing value, so no input is nullable; a null golden
    value is a request the server must refuse, and it would refuse its own golden file."""
    from sklearn.datasets import load_breast_cancer

    from pipeline.contract import parse_contract

    table = load_breast_cancer(as_frame=True).frame
    table["target"] = table["target"].map({0: "malignant", 1: "benign"})
    columns = {
        name: {"type": "numeric", "min": float(table[name].min()), "max": float(table[name].max())}
        for name in table.columns
        if name != "target"
    }
    columns["target"] = {
        "type": "categorical",
        "role": "target",
        "categories": ["benign", "malignant"],
    }
    contract = parse_contract({"columns": columns})
    assert not any(c.max_missing > 0 for c in contract.features)
    test = table.sample(60, random_state=0).reset_index(drop=True)
    test.loc[3, "mean radius"] = 500.0  # outside the contract's range: never a golden row
    frame, cases = golden_rows(test, contract, 8, np.linspace(0.5, 1.0, len(test)))
    assert len(frame) == 8 and not frame[contract.feature_names].isna().any().any()
    assert not any(case.startswith("synthetic") for case in cases)  # nothing to null or unseen
    assert "test row 3" not in cases and (frame["mean radius"] <= 28.11).all()
    payload = golden_payload(
        frame, cases, Outputs(np.array(["benign"] * 8), np.full((8, 2), 0.5)), contract, 1e-5
    )
    assert all(v is not None for row in payload["rows"] for v in row["inputs"].values())


def test_golden_rows_mark_the_synthetic_rows(exported):
    out, _ = exported
    rows = json.loads((out / "golden.json").read_text())["rows"]
    marks = [row.get("synthetic") for row in rows]
    assert marks[-2:] == ["missing", "unseen_category"] and set(marks[:-2]) == {None}


def test_the_exported_onnx_file_has_no_run_dependent_bytes(exported):
    out, _ = exported
    model = onnx.load(str(out / "model.onnx"))
    assert model.graph.doc_string == "" and all(not n.doc_string for n in model.graph.node)
    domains = [o.domain for o in model.opset_import]
    assert domains == sorted(set(domains))


def test_golden_rows_need_at_least_three(contract, data):
    splits, _ = data
    with pytest.raises(PipelineError, match="export.golden_rows is 2; it needs at least 3"):
        golden_rows(splits.test, contract, 2, np.ones(len(splits.test)))


def test_describe_inputs_follows_the_contract(contract):
    described = describe_inputs(contract)
    assert [d.name for d in described] == contract.feature_names
    assert "year" not in [d.name for d in described]  # role: ignored
    assert {d.name: d.nullable for d in described} == {
        c.name: c.max_missing > 0 for c in contract.features
    }
    assert [d.onnx_name for d in described] == contract.feature_names  # all names are safe


def test_describe_inputs_maps_unsafe_column_names_to_the_graph_names():
    from pipeline.contract import parse_contract

    contract = parse_contract(
        {
            "columns": {
                "mean radius": {"type": "numeric", "min": 0, "max": 50},
                "od280/od315": {"type": "numeric"},
                "île": {"type": "categorical", "categories": ["a", "b"]},
                "y": {"type": "categorical", "role": "target", "categories": ["0", "1"]},
            }
        }
    )
    described = describe_inputs(contract)
    assert [(d.name, d.onnx_name) for d in described] == [
        ("mean radius", "mean_radius"),
        ("od280/od315", "od280_od315"),
        ("île", "_le"),
    ]
    with pytest.raises(PipelineError, match="the ONNX graph has 2 inputs for 3 feature columns"):
        describe_inputs(contract, ["a", "b"])


# ---------------------------------------------------------------------------- MLflow and CLI
def test_mlflow_onnx_model_predicts_from_a_dataframe(exported, contract, mlflow_store):
    import mlflow

    out, result = exported
    parity = out.parent / "parity.json"
    parity.write_text(json.dumps(result.parity))
    mlflow.set_tracking_uri(mlflow_store)
    with mlflow.start_run() as run:
        info = log_export(out, parity, result, contract)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "export")}
    assert {"export/model.onnx", "export/model.json", "export/parity.json"} <= artifacts
    assert mlflow.get_run(run.info.run_id).data.tags["export.onnx_model_uri"] == info.model_uri

    model = mlflow.pyfunc.load_model(info.model_uri)
    raw = pd.DataFrame([row["inputs"] for row in result.golden["rows"]])
    predicted = model.predict(to_model_frame(raw, contract).reset_index(drop=True))
    expected = np.array([row["probabilities"] for row in result.golden["rows"]])
    assert list(predicted["label"]) == [row["label"] for row in result.golden["rows"]]
    assert np.abs(predicted["probabilities"] - expected).max() <= result.golden["tolerance"]
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    assert {"model.json", "golden.json"} <= {p.name for p in (local / "extra_files").iterdir()}


@pytest.fixture
def stage_inputs(tmp_path, trained, data, contract, params, mlflow_store):
    """Everything the export CLI reads, as the upstream stages would have written it."""
    import mlflow

    from pipeline.tracking import configure, write_run_file

    splits, pre = data
    native = trained("logistic_regression")
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["train"]["estimator"] = "logistic_regression"
    raw["data"]["contract"] = str(REPO_ROOT / "data" / "contract.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    train_dir = tmp_path / "models" / "train"
    train_dir.mkdir(parents=True)
    from pipeline.model import save_native_model

    save_native_model(native, train_dir)
    experiment_id = configure(params.mlflow.experiment)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        pass
    write_run_file(
        train_dir / "run.json", run.info.run_id, experiment_id, estimator="logistic_regression"
    )
    joblib.dump(pre, tmp_path / "preprocessor.joblib")
    splits.test.to_parquet(tmp_path / "test.parquet")
    (tmp_path / "processed").mkdir()
    for split in ("train", "val", "test"):
        getattr(splits, split).to_parquet(tmp_path / "processed" / f"{split}.parquet")
    (tmp_path / "dataset.parquet").write_bytes(b"raw bytes")
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    argv = [
        "--params", str(tmp_path / "params.yaml"),
        "--train-dir", str(train_dir),
        "--preprocessor", str(tmp_path / "preprocessor.joblib"),
        "--test", str(tmp_path / "test.parquet"),
        "--splits", str(tmp_path / "processed"),
        "--raw", str(tmp_path / "dataset.parquet"),
        "--metrics", str(tmp_path / "metrics.json"),
        "--out", str(tmp_path / "models" / "export"),
        "--parity", str(tmp_path / "reports" / "parity.json"),
    ]  # fmt: skip
    return tmp_path, argv, run.info.run_id


CLI_WITHOUT_TF = (
    "import sys\n"
    "from pipeline.stages.export import main\n"
    "code = main(sys.argv[1:])\n"
    "assert 'tensorflow' not in sys.modules, 'the sklearn family imported TensorFlow'\n"
    "sys.exit(code)\n"
)


def test_cli_exports_a_sklearn_model_without_importing_tensorflow(stage_inputs, mlflow_store):
    import hashlib

    root, argv, run_id = stage_inputs
    proc = subprocess.run(
        [sys.executable, "-c", CLI_WITHOUT_TF, *argv],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "export: logistic_regression -> " in proc.stdout
    descriptor = json.loads((root / "models/export/model.json").read_text())
    assert descriptor["lineage"]["run_id"] == run_id
    assert descriptor["lineage"]["data_sha256"] == hashlib.sha256(b"raw bytes").hexdigest()
    assert descriptor["lineage"]["git_commit"]
    blocks = {key.split(".")[0] for key in descriptor["lineage"]["params"]}
    assert blocks == {"data", "preprocess", "train", "export"}  # what produced the model
    parity = json.loads((root / "reports/parity.json").read_text())
    assert parity["passed"] is True and parity["rows"] == 69

    # Lineage the MLflow UI shows: the three splits as the run's datasets (item 10 of build).
    import mlflow

    mlflow.set_tracking_uri(mlflow_store)
    inputs = mlflow.get_run(run_id).inputs.dataset_inputs
    logged = {
        i.dataset.name: (i.dataset, {t.key: t.value for t in i.tags}["mlflow.data.context"])
        for i in inputs
    }
    assert {n: ctx for n, (_, ctx) in logged.items()} == {
        "penguins-classifier-train": "training",
        "penguins-classifier-val": "validation",
        "penguins-classifier-test": "testing",
    }
    test_ds, _ = logged["penguins-classifier-test"]
    assert json.loads(test_ds.source) == {"uri": str(root / "processed" / "test.parquet")}
    assert test_ds.source_type == "local" and len(test_ds.digest) == 8
    assert json.loads(test_ds.profile)["num_rows"] == 69
    schema = [c["name"] for c in json.loads(test_ds.schema)["mlflow_colspec"]]
    assert "species" in schema and "bill_length_mm" in schema
    assert len({d.digest for d, _ in logged.values()}) == 3  # content, not names


def test_cli_exits_1_on_a_perturbed_artifact_and_keeps_the_old_export(
    stage_inputs, monkeypatch, capsys
):
    root, argv, _ = stage_inputs
    old = root / "models" / "export"
    old.mkdir()
    (old / "model.json").write_text("{}")
    real = onnx_export.to_onnx
    monkeypatch.setattr(onnx_export, "to_onnx", lambda n, opset: _perturbed(real(n, opset)))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("export failed: parity failed on the test split (69 rows, tolerance")
    parity = json.loads((root / "reports/parity.json").read_text())
    result = parity["runtimes"]["onnxruntime"]
    assert parity["passed"] is False
    assert f"at row {result['worst_row']} " in err
    assert f"by {result['max_abs_diff']:.3e}" in err
    assert [p.name for p in old.iterdir()] == ["model.json"]  # untouched
    assert (old / "model.json").read_text() == "{}"


def _wrong_fill_for_missing_strings(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph imputing a missing ``sex`` with the wrong category."""
    model = copy.deepcopy(model)
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "LabelEncoder" and list(attr.strings) == [b"male"]:
                attr.strings[:] = [b"female"]
                return model
    raise AssertionError("no most-frequent fill value for 'sex' in the graph")


def test_golden_rows_catch_a_broken_missing_value_path_the_test_split_misses(
    trained, data, params, lineage, tmp_path, monkeypatch
):
    splits, _ = data
    assert not splits.test["sex"].isna().any()  # nothing in the test split exercises the bug
    real = onnx_export.to_onnx
    monkeypatch.setattr(
        onnx_export, "to_onnx", lambda n, opset: _wrong_fill_for_missing_strings(real(n, opset))
    )
    with pytest.raises(ParityError) as caught:
        export_model(
            trained("logistic_regression"), params, splits.test, METRICS, lineage, tmp_path / "x"
        )
    report = caught.value.report
    assert report["runtimes"]["onnxruntime"]["passed"] is True  # the test split agrees
    assert report["golden"]["passed"] is False and report["passed"] is False
    message = str(caught.value)
    assert message.startswith("parity failed on the golden rows (8 rows, tolerance 1e-05): ")
    assert message.endswith(
        "(Golden row 6: synthetic: missing bill_length_mm, bill_depth_mm, "
        "flipper_length_mm, body_mass_g, sex.)"
    )


def test_cli_names_a_missing_input(stage_inputs, capsys):
    root, argv, _ = stage_inputs
    (root / "metrics.json").unlink()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"export failed: --metrics '{root / 'metrics.json'}' does not exist; ")
    assert not (root / "models" / "export").exists()


# ---------------------------------------------------------------------------- regression
def test_a_regression_model_exports_a_prediction_output_with_its_parity_and_golden_rows(
    params, lineage, tmp_path
):
    from model_spec.task import Task
    from pipeline.stages.preprocess import fit_preprocessor
    from tests.bundled import contract_for, diabetes

    table = diabetes()
    contract = contract_for(table, "progression")
    shuffled = table.sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, val, test = shuffled.iloc[:260], shuffled.iloc[260:350], shuffled.iloc[350:]
    pre = fit_preprocessor(train, contract)

    def xy(frame):
        return pre.transform(to_model_frame(frame, contract)), frame["progression"].to_numpy(float)

    result = train_model("ridge", params.train, *xy(train), *xy(val), task=Task.REGRESSION)
    native = NativeModel(pre, result.model, result.family, "ridge", [], contract, Task.REGRESSION)
    p = replace(params, train=replace(params.train, estimator="ridge"))
    metrics = {"rmse": 55.0, "mae": 44.0, "r2": 0.45, "rows": len(test)}
    out = tmp_path / "export"
    exported = export_model(native, p, test.reset_index(drop=True), metrics, lineage, out)

    d = ModelDescriptor.read(out)
    assert d.task is Task.REGRESSION and d.classes == () and d.onnx.outputs == ("prediction",)
    assert d.name == "penguins-regressor"  # auto: data.source of these params, this task
    assert exported.parity["passed"] is True
    assert exported.parity["tolerance"] == native.estimator.parity_tolerance(Task.REGRESSION)
    onnx_report = exported.parity["runtimes"]["onnxruntime"]
    assert {"native_value", "runtime_value"} <= set(onnx_report)
    golden = json.loads((out / "golden.json").read_text())
    assert all("prediction" in r and "label" not in r for r in golden["rows"])
    assert not any(r.get("synthetic") for r in golden["rows"])  # nothing nullable, no categories
    session = onnx_export.onnx_session(out / "model.onnx")
    rows = pd.DataFrame([r["inputs"] for r in golden["rows"]])
    from model_spec.feed import build_feed

    (prediction,) = session.run(["prediction"], build_feed(d, rows))
    expected = np.array([r["prediction"] for r in golden["rows"]])
    assert prediction.shape == (len(rows), 1)
    assert np.abs(prediction[:, 0] - expected).max() <= 1e-3
    card = (out / "model_card.md").read_text()
    assert "Predicts the number `progression` (regression)" in card
    assert "output `prediction` `tensor(float)[N, 1]`" in card


def test_golden_rows_of_an_all_numeric_table_with_integer_coded_categories():
    """Every column a number (heart disease's ``cp``, titanic's ``Pclass`` declared
    categorical): a row of such a table is float64, which refused the unseen category's text
    (TypeError), and a code with a gap (1.0) must reach golden.json as "1"."""
    from pipeline.contract import parse_contract

    contract = parse_contract(
        {
            "columns": {
                "cp": {"type": "categorical", "categories": ["0", "1", "2"], "max_missing": 0.5},
                "age": {"type": "numeric"},
                "y": {"type": "categorical", "role": "target", "categories": ["0", "1"]},
            }
        }
    )
    test = pd.DataFrame(
        {
            "cp": [0.0, 1.0, np.nan, 2.0, 1.0, 0.0],
            "age": [40.0, 50.0, 60.0, 45.0, 55.0, 65.0],
            "y": [0.0, 1.0, 1.0, 0.0, 1.0, 0.0],
        }
    )
    frame, cases = golden_rows(test, contract, 5, np.linspace(0.5, 1.0, len(test)))
    assert cases[-2:] == ["synthetic: missing cp", "synthetic: unseen category in cp"]
    assert frame["cp"].iloc[-1] == UNSEEN_CATEGORY
    outputs = Outputs(np.array(["0"] * len(frame)), np.full((len(frame), 2), 0.5))
    payload = golden_payload(frame, cases, outputs, contract, 1e-5)
    codes = [row["inputs"]["cp"] for row in payload["rows"][:-2]]
    assert codes and set(codes) <= {"0", "1", "2", None}
    assert all(isinstance(row["inputs"]["age"], float) for row in payload["rows"])


@pytest.mark.parametrize("estimator", ["logistic_regression", "ridge"])
def test_columns_named_like_the_graphs_own_tensors_export_a_valid_graph(estimator, params):
    """Features called 'label', 'probabilities', 'prediction' (the outputs), 'variable'
    (skl2onnx's regressor output) or 'class_index' made an invalid graph ("'probabilities'
    has been used as output names multiple times")."""
    import onnx

    from model_spec.descriptor import onnx_input_names
    from model_spec.task import Task
    from pipeline.contract import parse_contract

    names = ["label", "probabilities", "prediction", "variable", "class_index"]
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(120, len(names))), columns=names)
    regression = estimator == "ridge"
    frame["y"] = frame["label"] * 3 + 1 if regression else np.where(frame["label"] > 0, "a", "b")
    target = (
        {"type": "numeric"} if regression else {"type": "categorical", "categories": ["a", "b"]}
    )
    contract = parse_contract(
        {"columns": {**{n: {"type": "numeric"} for n in names}, "y": {**target, "role": "target"}}}
    )
    assert onnx_input_names(names) == [
        "f_label", "f_probabilities", "f_prediction", "variable", "f_class_index",
    ]  # fmt: skip
    pre = fit_preprocessor(frame, contract)
    x = pre.transform(to_model_frame(frame, contract))
    y = frame["y"].to_numpy(float if regression else str)
    task = Task.REGRESSION if regression else None
    result = train_model(estimator, params.train, x, y, x, y, task=task)
    native = NativeModel(pre, result.model, result.family, estimator, result.classes, contract)
    model = onnx_export.to_onnx(native, params.export.opset)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == onnx_input_names(names)
    session = onnx_export.onnx_session(model)
    if regression:
        (prediction,) = session.run(None, onnx_export.onnx_feeds(frame, contract))
        assert np.abs(prediction.ravel() - native.predict(frame)).max() < 1e-4
    else:
        _, proba = onnx_export.run_onnx(session, to_model_frame(frame, contract), contract)
        assert np.abs(proba - native.predict_proba(frame)).max() <= params.export.parity_tolerance


def test_a_directory_that_cannot_be_deleted_is_replaced_whole(tmp_path):
    """The previous output is renamed aside, not deleted first: a deletion that failed (here a
    file that cannot be removed) left a half-deleted export that `make serve` still served."""
    import os
    import subprocess

    from pipeline.io import atomic_path

    target = tmp_path / "export"
    target.mkdir()
    (target / "golden.json").write_text("old golden")
    (target / "saved_model").mkdir()
    stuck = target / "saved_model" / "model_card.md"
    stuck.write_text("old card")
    if os.geteuid() == 0:  # root deletes anything a mode allows: make the file immutable
        subprocess.run(["chattr", "+i", str(stuck)], check=True)
        undo = ["chattr", "-i"]
    else:
        stuck.parent.chmod(0o500)
        undo = None
    try:
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "golden.json").write_text("new golden")
            (tmp / "model.onnx").write_text("new graph")
        assert sorted(p.name for p in target.iterdir()) == ["golden.json", "model.onnx"]
        assert (target / "golden.json").read_text() == "new golden"
    finally:
        for leftover in tmp_path.rglob("model_card.md"):
            if undo:
                subprocess.run([*undo, str(leftover)], check=False)
            leftover.parent.chmod(0o700)
