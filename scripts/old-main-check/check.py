"""Reproduce issue 9's findings black-box on the commit the issue was filed against (36e1092).

Run from a worktree of 36e1092 with that tree's own environment, one scenario per call:

    git worktree add --detach /work/wt/old36 36e1092 && (cd /work/wt/old36 && make env)
    cd /work/wt/old36 && nice -n 10 .venv/bin/python /path/to/check.py <scenario> [workdir]

Each scenario builds the same data and params as the test on main that covers the finding,
runs the real ``dvc repro`` (or the CLI) in a temporary copy of the OLD project (the old
tree's own ``tests.integration.conftest.make_project``), and prints ``OBSERVED:`` lines: what
the old code did, i.e. why the test on main fails there. Nothing here imports main's code.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from palmerpenguins import load_penguins

sys.path.insert(0, str(Path.cwd()))  # the old tree: its tests.integration.conftest
from tests.integration.conftest import Project, make_project  # noqa: E402


def say(key: str, value) -> None:
    print(f"OBSERVED: {key}: {value}", flush=True)


def last_lines(proc, pattern: str) -> list[str]:
    out = proc.stdout + proc.stderr
    return [line.strip() for line in out.splitlines() if re.search(pattern, line)][-3:]


def ran(proc) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", proc.stdout)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def contract_dict(frame: pd.DataFrame, target: str) -> dict:
    """The same contract as main's tests/bundled.py contract_dict (copied: it is pure pandas)."""
    columns: dict = {}
    for name in frame.columns:
        series = frame[name]
        if not pd.api.types.is_numeric_dtype(series):
            entry = {
                "type": "categorical",
                "categories": sorted(series.dropna().astype(str).unique()),
            }
            if name != target:
                entry["max_unknown"] = 0.0
        else:
            low, high = float(series.min()), float(series.max())
            pad = (high - low) or 1.0
            entry = {"type": "numeric", "min": low - pad, "max": high + pad}
        entry["max_missing"] = 0.0 if name == target else float(series.isna().mean() > 0) * 0.5
        if name == target:
            entry["role"] = "target"
        columns[str(name)] = entry
    return {"rows": {"min": 10}, "columns": columns}


def use_table(project: Project, frame: pd.DataFrame, target: str, name: str) -> None:
    frame.to_csv(project.root / "data" / f"{name}.csv", index=False)
    (project.root / "data" / "contract.yaml").write_text(
        yaml.safe_dump(contract_dict(frame, target), allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    project.set_params(**{"data.source": f"data/{name}.csv"})


def wine_awkward() -> pd.DataFrame:
    """main's tests/integration/test_bring_your_own_data.py awkward_wine()."""
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame["cultivar"] = data.target.map(lambda i: f"cultivar_{i}").astype(str)
    frame = frame.rename(
        columns={"ash": "mean radius", "magnesium": "bill.depth.mm", "alcohol": "île"}
    )
    frame["île"] = np.where(frame["île"] > frame["île"].median(), "nord", "sud")
    return frame


def cancer_safe_names() -> pd.DataFrame:
    """main's tests/bundled.py breast_cancer(), column names made safe for the old export
    (so finding 1 does not mask findings 4 and 8)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame.columns = [re.sub(r"\W", "_", c) for c in frame.columns]
    frame["diagnosis"] = data.target.map(dict(enumerate(data.target_names))).astype(str)
    return frame


def python_m(project: Project, *args: str):
    return project.python("-m", *args, check=False)


def register(project: Project):
    return python_m(
        project, "pipeline.registry", "register", "--params", "params.yaml",
        "--model-dir", "models/export", "--gate", "reports/gate.json", "--dvc-lock", "dvc.lock",
    )  # fmt: skip


# ------------------------------------------------------------------------------ scenarios
def f1(work: Path) -> None:
    """Finding 1: awkward column names; main: test_bring_your_own_data."""
    p = make_project(work / "p")
    use_table(p, wine_awkward(), "cultivar", "wine")
    p.set_params(**{"train.estimator": "logistic_regression"})
    proc = p.dvc("repro", check=False)
    say("exit code", proc.returncode)
    say("stages run", ran(proc))
    say("traceback", "Traceback" in proc.stdout + proc.stderr)
    say("message", last_lines(proc, r"Required inputs|Error|failed"))
    say("models/export/model.json exists", (p.root / "models/export/model.json").exists())


def f2_11k(work: Path) -> None:
    """Finding 2 (main: test_data_change), then finding 11 for Keras on the same project."""
    p = make_project(work / "p")
    source = p.root / "data" / "mine.csv"
    load_penguins().to_csv(source, index=False)
    p.set_params(**{"data.source": "data/mine.csv"})
    p.commit("use a local file")
    first = p.dvc("repro", "preprocess")
    say("first repro ran", ran(first))
    load_penguins().head(300).to_csv(source, index=False)
    changed = p.dvc("repro", "preprocess")
    say("after overwriting the file: ran", ran(changed))
    say("after overwriting the file: stdout tail", changed.stdout.strip().splitlines()[-2:])
    rows = json.loads((p.root / "reports/validation/result.json").read_text()).get("rows")
    say("validation result rows (main expects 300)", rows)
    say("raw table rows", len(pd.read_parquet(p.root / "data/raw/dataset.parquet")))
    say("dvc status", p.dvc("status").stdout.strip().splitlines()[:3])

    # Finding 11 (Keras): the same trained network exported twice.
    p.dvc("repro", "export")
    first_hash = sha(p.root / "models/export/model.onnx")
    p.dvc("repro", "--force", "--single-item", "export")
    second_hash = sha(p.root / "models/export/model.onnx")
    say("keras model.onnx sha256, export run twice on one trained model", [first_hash, second_hash])
    import onnx

    model = onnx.load(str(p.root / "models/export/model.onnx"))
    say("keras doc_string", model.doc_string[:120] or model.graph.doc_string[:120])


def f3_4_8_10_11_12(work: Path) -> None:
    """Findings 3, 10 (main: test_failed_export), 11 for scikit-learn, 4 (main:
    test_registry ...champion_of_other_data...), 8 (main: test_bring_your_own_data) and 12,
    in one project so the penguins champion exists when the user's own table arrives."""
    p = make_project(work / "p")
    p.set_params(**{"train.estimator": "logistic_regression"})
    p.dvc("repro")
    gate = json.loads((p.root / "reports/gate.json").read_text())
    say("penguins: gate passed", gate["passed"])
    say("register", register(p).returncode)
    say(
        "promote", python_m(p, "pipeline.registry", "promote", "--params", "params.yaml").returncode
    )

    # 11, scikit-learn: export re-run on the same trained model, twice.
    hashes = [sha(p.root / "models/export/model.onnx")]
    for _ in range(2):
        p.dvc("repro", "--force", "--single-item", "export")
        hashes.append(sha(p.root / "models/export/model.onnx"))
    say("logistic_regression model.onnx sha256 over 3 exports of one model", hashes)
    p.dvc("repro")  # gate up to date again

    # 3 and 10: a new model whose export fails parity.
    good_run = json.loads((p.root / "models/export/model.json").read_text())["lineage"]["run_id"]
    p.set_params(**{"train.logistic_regression.C": 0.5, "export.parity_tolerance": 1.0e-12})
    failed = p.dvc("repro", check=False)
    say("failing export: exit code", failed.returncode)
    say("failing export: message", last_lines(failed, r"export failed|parity"))
    say("finding 3: models/export exists after the failure", (p.root / "models/export").exists())
    listing = (
        sorted(x.name for x in (p.root / "models/export").iterdir())
        if (p.root / "models/export").exists()
        else []
    )
    say("finding 3: models/export holds", listing)
    gate = json.loads((p.root / "reports/gate.json").read_text())
    say("finding 10: reports/gate.json after the failed export: passed", gate.get("passed"))
    say("finding 10: gate.json's run vs the good run", [gate.get("candidate"), good_run])
    refused = register(p)
    say(
        "finding 10: register after the failed export: exit, stderr",
        [refused.returncode, refused.stderr.strip()[-300:]],
    )

    # 4: the user's own table, registry.model_name left as shipped.
    p.set_params(**{"train.logistic_regression.C": 1.0, "export.parity_tolerance": 1.0e-5})
    use_table(p, cancer_safe_names(), "diagnosis", "cancer")
    own = p.dvc("repro", check=False)
    say("finding 4: exit code", own.returncode)
    say("finding 4: stages run", ran(own))
    say("finding 4: message", last_lines(own, r"vs_champion|gate failed|species"))
    descriptor = json.loads((p.root / "models/export/model.json").read_text())
    say("finding 4: the export's registered name", descriptor.get("name"))

    # 8: a table with no missing values; own model name so no champion is compared.
    p.set_params(**{"registry.model_name": "cancer-classifier"})
    own = p.dvc("repro", check=False)
    say("finding 8: repro exit code", own.returncode)
    gate = json.loads((p.root / "reports/gate.json").read_text())
    say("finding 8: gate passed / checks", [gate["passed"], [c["name"] for c in gate["checks"]]])
    golden = json.loads((p.root / "models/export/golden.json").read_text())
    nulls = sorted({(i, k) for i, r in enumerate(golden["rows"]) for k, v in r["inputs"].items()
                    if v is None})  # fmt: skip
    descriptor = json.loads((p.root / "models/export/model.json").read_text())
    nullable = (
        {
            c["name"]: c.get("nullable")
            for c in descriptor.get("inputs", descriptor.get("columns", []))
        }
        if isinstance(descriptor.get("inputs", descriptor.get("columns")), list)
        else {}
    )
    say("finding 8: golden rows with a null input (first)", nulls[:2])
    say("finding 8: nullable inputs in the descriptor", [k for k, v in nullable.items() if v])
    sys.path.insert(0, str(Path.cwd()))
    from serving.config import ServingConfig
    from serving.model import ModelError, load_model

    try:
        load_model(p.root / "models/export", ServingConfig.from_env())
        say("finding 8: the old server loads its model", "yes")
    except ModelError as exc:
        say("finding 8: the old server refuses its own model", str(exc)[:300])
    from serving.app import create_app

    app = create_app({"model_dir": str(p.root / "models/export")})
    ready = app.test_client().get("/health/ready")
    say("finding 8: /health/ready", [ready.status_code, ready.get_data(as_text=True)[:300]])
    reg = register(p)
    say("finding 8: make register", [reg.returncode, reg.stdout.strip()[-200:]])

    # 12: the default data's floors on another table.
    raw = yaml.safe_load((p.root / "params.yaml").read_text())
    say("finding 12: shipped gate floors", raw["gate"]["min"])
    p.set_params(**{"gate.min.f1_macro": 0.999})
    low = p.dvc("repro", check=False)
    say("finding 12: gate exit code", low.returncode)
    say("finding 12: gate message", last_lines(low, r"f1_macro|gate failed"))


def f5(work: Path) -> None:
    """Finding 5: one-class target (main: test_bad_input[one-class target], test_train ...)
    and an entirely empty column drafted by infer-contract (main: test_real_tables ...)."""
    p = make_project(work / "one")
    load_penguins().query("species == 'Adelie'").to_csv(p.root / "data/bad.csv", index=False)
    p.set_params(**{"data.source": "data/bad.csv", "train.estimator": "logistic_regression"})
    proc = p.dvc("repro", check=False)
    say("one class: exit code", proc.returncode)
    say("one class: stages run", ran(proc))
    say("one class: traceback", "Traceback" in proc.stdout + proc.stderr)
    say("one class: message", last_lines(proc, r"Error|failed"))

    p = make_project(work / "empty")
    load_penguins().assign(bill_length_mm=np.nan).to_csv(p.root / "data/table.csv", index=False)
    p.set_params(**{"data.source": "data/table.csv", "train.estimator": "logistic_regression"})
    drafted = python_m(p, "pipeline.validate", "infer", "--params", "params.yaml",
                       "--target", "species", "--out", "data/contract.yaml")  # fmt: skip
    say("empty column: infer exit code, stdout", [drafted.returncode, drafted.stdout.strip()])
    spec = yaml.safe_load((p.root / "data/contract.yaml").read_text())["columns"]["bill_length_mm"]
    say("empty column: drafted spec", spec)
    proc = p.dvc("repro", check=False)
    say("empty column: exit code", proc.returncode)
    say("empty column: stages run", ran(proc))
    say("empty column: traceback", "Traceback" in proc.stdout + proc.stderr)
    say("empty column: message", last_lines(proc, r"Error|failed"))


def f6_9(work: Path) -> None:
    """Finding 6 (main: test_real_tables[diabetes], test_tasks regression) and 9 (main:
    test_validate infer tests): the CLI and validate only, no training."""
    from sklearn.datasets import load_diabetes

    p = make_project(work / "reg")
    frame = load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})
    frame.to_csv(p.root / "data/diabetes.csv", index=False)
    p.set_params(**{"data.source": "data/diabetes.csv"})
    drafted = python_m(p, "pipeline.validate", "infer", "--params", "params.yaml",
                       "--target", "progression", "--out", "data/draft.yaml")  # fmt: skip
    say("6: infer on diabetes: exit, message", [drafted.returncode, drafted.stderr.strip()[-300:]])
    use_table(p, frame, "progression", "diabetes")
    proc = p.dvc("repro", "validate", check=False)
    say("6: repro validate with a numeric target: exit", proc.returncode)
    say("6: message", last_lines(proc, r"failed|categorical|classif"))

    # 9a: a date column with few distinct values (a model year as ISO dates).
    p = make_project(work / "dates")
    pen = load_penguins()
    pen["recorded"] = pen["year"].map(lambda y: f"{y}-01-01")
    pen.to_csv(p.root / "data/dated.csv", index=False)
    p.set_params(**{"data.source": "data/dated.csv"})
    drafted = python_m(p, "pipeline.validate", "infer", "--params", "params.yaml",
                       "--target", "species", "--out", "data/draft.yaml")  # fmt: skip
    spec = yaml.safe_load((p.root / "data/draft.yaml").read_text())["columns"]["recorded"]
    say("9a: date column drafted as", [drafted.returncode, spec, drafted.stdout.strip()])
    # 9b: an integer-coded target.
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True).frame
    iris.to_csv(p.root / "data/iris.csv", index=False)
    p.set_params(**{"data.source": "data/iris.csv"})
    drafted = python_m(p, "pipeline.validate", "infer", "--params", "params.yaml",
                       "--target", "target", "--out", "data/draft.yaml")  # fmt: skip
    spec = yaml.safe_load((p.root / "data/draft.yaml").read_text())["columns"]["target"]
    say("9b: integer target drafted as", [drafted.returncode, spec, drafted.stdout.strip()])
    # 9c: `make infer-contract OUT=data/contract.yaml` over the documented example.
    p.set_params(**{"data.source": "builtin:penguins"})
    before = (p.root / "data/contract.yaml").read_text()
    drafted = python_m(p, "pipeline.validate", "infer", "--params", "params.yaml",
                       "--target", "species", "--out", "data/contract.yaml")  # fmt: skip
    after = (p.root / "data/contract.yaml").read_text()
    say("9c: infer over data/contract.yaml without --force: exit", drafted.returncode)
    say("9c: contract overwritten", before != after)
    say("9c: the documented header is gone", "Per column:" in before and "Per column:" not in after)
    say(
        "9c: what the draft's header points to",
        [line for line in after.splitlines() if "contract.yaml" in line][:2],
    )


def f7(work: Path) -> None:
    """Finding 7: silent poison (main: test_bad_input[every row duplicated ten times],
    test_real_tables[penguins with a label-encoding feature], test_gate leakage)."""
    pen = load_penguins()
    code = pen["species"].map({"Adelie": 0, "Chinstrap": 1, "Gentoo": 2})
    noise = np.random.default_rng(1).uniform(0.0, 2.0, len(pen))
    tables = {
        "duplicated x10": pd.concat([pen] * 10, ignore_index=True),
        "label in range": pen.assign(bill_depth_mm=12.0 + 4.0 * code + noise),
    }
    for label, frame in tables.items():
        p = make_project(work / label.replace(" ", "_"))
        frame.to_csv(p.root / "data/poison.csv", index=False)
        p.set_params(**{"data.source": "data/poison.csv", "train.estimator": "logistic_regression"})
        proc = p.dvc("repro", check=False)
        say(f"{label}: repro exit", proc.returncode)
        result = json.loads((p.root / "reports/validation/result.json").read_text())
        say(f"{label}: validation success, keys", [result["success"], sorted(result)])
        gate = json.loads((p.root / "reports/gate.json").read_text())
        metrics = json.loads((p.root / "reports/metrics.json").read_text())
        say(f"{label}: gate passed, test f1_macro", [gate["passed"], metrics.get("f1_macro")])
        reg = register(p)
        say(f"{label}: register exit", [reg.returncode, reg.stdout.strip()[-150:]])
        if label.startswith("duplicated"):
            train = pd.read_parquet(p.root / "data/processed/train.parquet")
            test = pd.read_parquet(p.root / "data/processed/test.parquet")
            cols = [c for c in test.columns if c in train.columns]

            seen = set(pd.util.hash_pandas_object(train[cols], index=False))
            both = pd.util.hash_pandas_object(test[cols], index=False).isin(seen)
            say(f"{label}: test rows with a copy in train", f"{int(both.sum())} of {len(test)}")


def f12(work: Path) -> None:
    """Finding 12 (main: tests/integration/test_gate_floors.py): diabetes cut into five
    unequal bands through the old gate, and the old README's bring-your-own-data steps."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    bands = ["very low", "low", "middle", "high", "very high"]
    cut = pd.cut(frame["target"], [0, 75, 150, 225, 275, 400], labels=bands)
    frame = frame.drop(columns="target").assign(band=cut.astype(str))
    p = make_project(work / "p")
    use_table(p, frame, "band", "bands")
    p.set_params(**{"train.estimator": "logistic_regression"})
    proc = p.dvc("repro", check=False)
    say("exit code, stages run", [proc.returncode, ran(proc)])
    say("gate message", last_lines(proc, r"gate failed|f1_macro|roc_auc"))
    gate = json.loads((p.root / "reports/gate.json").read_text())
    say("gate failed checks, model name", [gate.get("failed"), gate.get("model_name")])
    readme = (Path.cwd() / "README.md").read_text()
    section = readme.split("## Bring your own data", 1)[1].split("\n## ", 1)[0]
    for key in ("gate.min", "gate.baseline_margin", "registry.model_name", "train.estimator"):
        say(f"README bring-your-own-data steps mention {key}", key in section)


def f11k(work: Path) -> None:
    """Finding 11 (Keras): what differs between two exports of one trained network."""
    import onnx

    p = make_project(work / "p")
    p.set_params(**{"train.keras_mlp.epochs": 5})
    p.dvc("repro", "export")
    models = [onnx.load(str(p.root / "models/export/model.onnx"))]
    p.dvc("repro", "--force", "--single-item", "export")
    models.append(onnx.load(str(p.root / "models/export/model.onnx")))
    say("sha256 of the two exports", [hashlib.sha256(m.SerializeToString()).hexdigest()[:16]
                                      for m in models])  # fmt: skip
    for field in ("doc_string", "producer_name", "producer_version"):
        values = [getattr(m, field) for m in models]
        if values[0] != values[1]:
            say(f"model.{field} differs", [v[:160] for v in values])
    say("opset_import order", [[(o.domain, o.version) for o in m.opset_import] for m in models])
    docs = [[(n.name, n.doc_string) for n in m.graph.node if n.doc_string] for m in models]
    say("node doc_strings differ", docs[0] != docs[1])
    same_graph = [n.SerializeToString() for n in models[0].graph.node] == [
        n.SerializeToString() for n in models[1].graph.node
    ]
    say("graph nodes identical", same_graph)
    say("graph.doc_string", [m.graph.doc_string[:160] for m in models])


SCENARIOS = {"f1": f1, "f2_11k": f2_11k, "f3_4_8_10_11_12": f3_4_8_10_11_12, "f5": f5,
             "f6_9": f6_9, "f7": f7, "f12": f12, "f11k": f11k}  # fmt: skip

if __name__ == "__main__":
    name = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix=f"old36-{name}-") as tmp:
        SCENARIOS[name](Path(tmp))
