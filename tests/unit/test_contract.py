import pytest

from pipeline.contract import dump_contract, parse_contract
from pipeline.errors import PipelineError


def test_repo_contract_describes_penguins(contract):
    assert contract.target == "species"
    assert contract.numeric_features == [
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
    ]
    assert contract.categorical_features == ["island", "sex"]
    assert "year" not in contract.feature_names  # role: ignored
    assert contract.column("sex").max_missing == 0.05


def test_round_trip(contract):
    import yaml

    again = parse_contract(yaml.safe_load(dump_contract(contract)))
    assert again == contract


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"columns": {}}, "non-empty 'columns'"),
        ({"columns": {"a": {"type": "text"}}}, "column 'a' needs type"),
        ({"columns": {"a": {"type": "numeric", "colour": 1}}}, "unknown key\\(s\\): colour"),
        ({"columns": {"a": {"type": "numeric"}}}, "exactly one column needs role: target"),
        (
            {"columns": {"y": {"type": "categorical", "role": "target"}}},
            "categorical column 'y' needs a list of 'categories'",
        ),
        (
            {"columns": {"y": {"type": "categorical", "role": "target", "categories": ["a"]}}},
            "no feature columns",
        ),
    ],
)
def test_bad_contracts_are_named(raw, message):
    with pytest.raises(PipelineError, match=message):
        parse_contract(raw)


def test_the_target_decides_the_task():
    def task(target: dict) -> str:
        raw = {"columns": {"y": {"role": "target", **target}, "x": {"type": "numeric"}}}
        return parse_contract(raw).task.value

    assert task({"type": "numeric"}) == "regression"
    assert task({"type": "categorical", "categories": ["a", "b"]}) == "binary"
    assert task({"type": "categorical", "categories": ["a", "b", "c"]}) == "multiclass"
