"""Tables shaped like well-known public ones, through the real stages in-process (ingest to a
gated export), written as a user's file would be: what a unit test cannot show is that every
stage agrees on the same categories and that the exported graph gets them too.

* a ';'-delimited CSV (wine quality, bank marketing) whose integer-coded feature and target
  each have a missing value, so pandas reads both as floats (1.0): validation, training,
  the ONNX feed, the golden rows and the gate must all call the code "1" (each of them said
  "1.0" somewhere before), and parity and the golden-input check must pass.

About 20 s on a quiet 2-core machine (logistic regression, 300 rows).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.integration.chain import new_chain

pytestmark = pytest.mark.integration


def _table(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    pclass = rng.integers(1, 4, n).astype(float)
    x = rng.normal(size=n)
    survived = (rng.random(n) < np.where(pclass == 1, 0.85, 0.15)).astype(float)
    frame = pd.DataFrame({"Pclass": pclass, "fare": x.round(3), "Survived": survived})
    frame.loc[[4, 9], "Pclass"] = np.nan
    frame.loc[[7], "Survived"] = np.nan
    return frame


def test_integer_codes_with_gaps_in_a_semicolon_csv_go_to_a_gated_export(tmp_path):
    chain = new_chain(tmp_path / "project")
    _table().to_csv(chain.root / "data" / "titanic.csv", sep=";", index=False)
    contract = {
        "rows": {"min": 100},
        "columns": {
            "Pclass": {"type": "categorical", "categories": ["1", "2", "3"], "max_missing": 0.05},
            "fare": {"type": "numeric"},
            "Survived": {
                "type": "categorical",
                "role": "target",
                "categories": ["0", "1"],
                "max_missing": 0.05,
            },
        },
    }
    (chain.root / "data" / "contract.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
    chain.set_params(
        **{"data.source": "data/titanic.csv", "train.estimator": "logistic_regression"}
    )
    chain.prepare()
    candidate = chain.candidate("first", tmp_path / "store")
    code, gate_json, _ = chain.gate(candidate, chain.root / "params.yaml", tmp_path)

    descriptor = json.loads((candidate.model_dir / "model.json").read_text())
    assert descriptor["classes"] == ["0", "1"]
    (pclass,) = (i for i in descriptor["inputs"] if i["name"] == "Pclass")
    assert pclass["categories"] == ["1", "2", "3"]
    golden = json.loads((candidate.model_dir / "golden.json").read_text())
    seen = {row["inputs"]["Pclass"] for row in golden["rows"] if not row.get("synthetic")}
    assert seen and seen <= {"1", "2", "3", None}
    assert json.loads(candidate.parity_file.read_text())["passed"] is True
    gate = json.loads(gate_json.read_text())
    checks = {c["name"]: c["passed"] for c in gate["checks"]}
    assert checks["golden_inputs"] and checks["parity"] and checks["validation"], gate
    assert code == 0 and gate["passed"] is True
