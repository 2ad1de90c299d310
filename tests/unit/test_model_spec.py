"""The shared definitions: task, descriptor round trip and refusals, ONNX names, feed."""

import json

import numpy as np
import pandas as pd
import pytest

from model_spec.descriptor import (
    DescriptorError,
    InputSpec,
    ModelDescriptor,
    OnnxSpec,
    Parity,
    onnx_input_names,
    outputs_for,
)
from model_spec.feed import FeedError, build_feed
from model_spec.task import Task


def _descriptor(**overrides):
    fields = dict(
        name="m",
        task=Task.MULTICLASS,
        estimator="logistic_regression",
        family="sklearn",
        target="species",
        inputs=(
            InputSpec("mean radius", "mean_radius", "numeric", True, 0.0, 10.0),
            InputSpec("île", "_le", "categorical", False, categories=("a", "b")),
        ),
        onnx=OnnxSpec(),
        classes=("x", "y", "z"),
        parity=Parity(True, 1e-8, 1e-5),
    )
    fields.update(overrides)
    return ModelDescriptor(**fields)


def test_task_follows_the_target_type():
    assert Task.for_target("numeric") is Task.REGRESSION
    assert Task.for_target("categorical", 2) is Task.BINARY
    assert Task.for_target("categorical", 5) is Task.MULTICLASS
    assert Task.BINARY.is_classification and not Task.REGRESSION.is_classification
    with pytest.raises(ValueError, match="at least 2 classes"):
        Task.for_target("categorical", 1)
    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        Task.parse("ranking")


def test_onnx_names_are_safe_stable_and_unique():
    names = onnx_input_names(["mean radius", "od280/od315", "île", "1x", "a b", "a_b", ""])
    assert names == ["mean_radius", "od280_od315", "_le", "f_1x", "a_b", "a_b_2", "f_"]
    assert onnx_input_names(["a b", "a_b"]) == onnx_input_names(["a b", "a_b"])
    # the graph's own output names are taken: a column called 'label' feeds 'f_label'
    assert onnx_input_names(["label", "prediction", "labels"]) == [
        "f_label",
        "f_prediction",
        "labels",
    ]


def test_outputs_follow_the_task():
    assert outputs_for(Task.REGRESSION) == ["prediction"]
    assert outputs_for(Task.BINARY) == ["label", "probabilities"]


def test_descriptor_round_trips_through_json(tmp_path):
    descriptor = _descriptor()
    path = descriptor.write(tmp_path)
    assert path.name == "model.json"
    assert ModelDescriptor.read(tmp_path) == descriptor
    raw = json.loads(path.read_text())
    assert raw["onnx"]["inputs"] == ["mean_radius", "_le"]
    assert raw["task"] == "multiclass"


def test_descriptor_refusals_name_the_problem(tmp_path):
    raw = _descriptor().to_dict()
    with pytest.raises(DescriptorError, match="schema_version 1 is not 2"):
        ModelDescriptor.from_dict({**raw, "schema_version": 1})
    with pytest.raises(DescriptorError, match="unknown task"):
        ModelDescriptor.from_dict({**raw, "task": "ranking"})
    with pytest.raises(DescriptorError, match="at least two classes"):
        ModelDescriptor.from_dict({**raw, "classes": ["x"]})
    with pytest.raises(DescriptorError, match="does not exist"):
        ModelDescriptor.read(tmp_path / "nope")
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(DescriptorError, match="cannot read"):
        ModelDescriptor.read(tmp_path)


def test_feed_uses_onnx_names_and_marks_missing_values():
    frame = pd.DataFrame({"mean radius": [1.0, None, 3.0], "île": ["a", None, np.nan], "x": 1})
    feed = build_feed(_descriptor(), frame)
    assert list(feed) == ["mean_radius", "_le"]
    assert feed["mean_radius"].dtype == np.float64 and feed["mean_radius"].shape == (3, 1)
    assert np.isnan(feed["mean_radius"][1, 0])
    assert feed["_le"].ravel().tolist() == ["a", "", ""]


def test_feed_refuses_absent_and_wrongly_typed_columns():
    with pytest.raises(FeedError, match="missing input column\\(s\\): 'île'"):
        build_feed(_descriptor(), {"mean radius": [1.0]})
    with pytest.raises(FeedError, match="column 'mean radius' is numeric; row 1 holds 'x'"):
        build_feed(_descriptor(), {"mean radius": [1, "x"], "île": ["a", "b"]})


def test_the_feed_writes_an_integral_float_category_as_its_integer_code():
    from model_spec.feed import categorical_array

    values = [1.0, 2, None, "a", float("nan"), 2.5, np.float32(3.0), True]
    assert categorical_array(values).ravel().tolist() == ["1", "2", "", "a", "", "2.5", "3", "True"]
