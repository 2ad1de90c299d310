"""Bring your own data, end to end through the real ``dvc repro`` in a temporary copy.

Issue 9, item 1: column names holding spaces, slashes, dots and non-ASCII letters (scikit-learn's
wine table keeps ``od280/od315_of_diluted_wines``; breast cancer's ``mean radius``; R's
``bill.depth.mm``; ``île``) go from the CSV file to a gated, servable export. Item 8: the table
has no missing value, so no input is nullable, and the golden rows must never set one to null.
Item 4: the model is registered under a name that follows the data, not ``penguins-classifier``.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import yaml

from model_spec.descriptor import ModelDescriptor
from model_spec.feed import build_feed
from tests.bundled import contract_dict, wine
from tests.integration.conftest import Project

pytestmark = pytest.mark.integration

RENAMED = {"ash": "mean radius", "magnesium": "bill.depth.mm", "alcohol": "île"}


def awkward_wine() -> pd.DataFrame:
    """The wine table with every kind of awkward column name, one of them categorical."""
    frame = wine().rename(columns=RENAMED)
    frame["île"] = np.where(frame["île"] > frame["île"].median(), "nord", "sud")
    return frame


def test_awkward_column_names_and_no_missing_values_go_end_to_end(project: Project):
    frame = awkward_wine()
    assert frame.notna().all().all()
    frame.to_csv(project.root / "data" / "wine.csv", index=False)
    contract = contract_dict(frame, "cultivar")
    (project.root / "data" / "contract.yaml").write_text(
        yaml.safe_dump(contract, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    project.set_params(**{"data.source": "data/wine.csv", "train.estimator": "logistic_regression"})
    project.dvc("repro")

    export = project.root / "models" / "export"
    descriptor = ModelDescriptor.read(export)
    assert descriptor.name == "wine-classifier"  # registry.model_name: auto
    assert descriptor.task.value == "multiclass"
    mapping = {i.name: i.onnx_name for i in descriptor.inputs}
    assert mapping["od280/od315_of_diluted_wines"] == "od280_od315_of_diluted_wines"
    assert mapping["mean radius"] == "mean_radius"
    assert mapping["bill.depth.mm"] == "bill_depth_mm"
    assert mapping["île"] == "_le"
    assert not any(i.nullable for i in descriptor.inputs)

    session = ort.InferenceSession(str(export / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == descriptor.onnx_inputs
    golden = json.loads((export / "golden.json").read_text(encoding="utf-8"))
    for row in golden["rows"]:
        assert set(row["inputs"]) == set(mapping)  # requests use the original names
        assert None not in row["inputs"].values()  # no nullable input: never null (item 8)
    assert not any(r.get("synthetic") == "missing" for r in golden["rows"])
    rows = pd.DataFrame([r["inputs"] for r in golden["rows"]])
    labels, proba = session.run(["label", "probabilities"], build_feed(descriptor, rows))
    assert list(labels) == [r["label"] for r in golden["rows"]]
    expected = np.array([r["probabilities"] for r in golden["rows"]])
    assert np.abs(proba - expected).max() <= golden["tolerance"]

    gate = project.read_json("reports/gate.json")
    assert gate["passed"] is True and gate["model_name"] == "wine-classifier"
    checks = {c["name"]: c for c in gate["checks"]}
    assert checks["golden_inputs"]["passed"] is True
    assert {"vs_baseline.log_loss", "vs_baseline.f1_macro"} <= set(checks)
    assert gate["note"] == (
        "Registered model 'wine-classifier' does not exist yet, so there is no champion. "
        "Absolute thresholds only."
    )
    assert project.read_json("reports/parity.json")["passed"] is True
