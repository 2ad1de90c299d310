"""What `make run` prints at the end: the model from its descriptor and the gate's verdict."""

from __future__ import annotations

import json

from model_spec.descriptor import InputSpec, Lineage, ModelDescriptor, OnnxSpec
from model_spec.task import Task
from pipeline.summary import summarize


def test_the_summary_names_the_model_and_a_gate_report_voided_by_a_failed_export(tmp_path):
    ModelDescriptor(
        name="diabetes-regressor",
        task=Task.REGRESSION,
        estimator="ridge",
        family="sklearn",
        target="progression",
        inputs=(InputSpec("bmi", "bmi", "numeric", False),),
        onnx=OnnxSpec(outputs=("prediction",)),
        lineage=Lineage(run_id="r1"),
    ).write(_mkdir(tmp_path / "models/export"))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/metrics.json").write_text(json.dumps({"rmse": 53.1, "r2": 0.45}))
    gate = {"passed": False, "invalidated": True, "note": "Not judged: the export failed."}
    (tmp_path / "reports/gate.json").write_text(json.dumps(gate))
    lines = summarize(tmp_path)
    assert lines[0] == f"{'Test metrics:':34} rmse 53.1000, r2 0.4500"
    # every label is padded to one column, so the values line up under each other
    assert all(
        line[:34].rstrip().endswith(":") and line[34:36].strip() == line[35] for line in lines
    ), lines
    assert "diabetes-regressor (regression, ridge, 1 inputs -> prediction)" in lines[1]
    assert lines[2].split(maxsplit=1) == ["Gate:", "not judged: Not judged: the export failed."]

    gate = {"passed": True, "checks": [{}] * 8, "candidate": {"run_id": "r1"}}
    (tmp_path / "reports/gate.json").write_text(json.dumps(gate))
    assert "passed (8 checks) for run r1" in summarize(tmp_path)[2]


def _mkdir(path):
    path.mkdir(parents=True)
    return path
