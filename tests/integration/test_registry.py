"""Gate, register, promote and rollback against a real MLflow sqlite store.

One module-scoped project runs the real pipeline stages three times (see ``chain.py``) with the
logistic regression: a good model, a deliberately worse one (``C=1e-4`` starves it) and an equal one
(the good params again, a new run). Each test then works on its *own* registered-model name in
the shared store, so the tests do not depend on each other's order.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from model_spec.descriptor import ModelDescriptor
from pipeline.io import file_sha256, read_json
from pipeline.registry import actor, load_history
from pipeline.stages.gate import find_export_dir, predict_onnx
from tests.integration.chain import Candidate, Chain, new_chain

pytestmark = pytest.mark.integration


@dataclass
class World:
    chain: Chain
    uri: str
    good: Candidate
    worse: Candidate
    equal: Candidate


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        env.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        env.setenv("USER", "registry-test")
        chain = new_chain(root / "project")
        # logistic regression: seconds to train, and C is the knob that cripples it
        chain.set_params(**{"train.estimator": "logistic_regression"})
        chain.prepare()
        good = chain.candidate("good", root / "candidates")
        chain.set_params(**{"train.logistic_regression.C": 1e-4})
        worse = chain.candidate("worse", root / "candidates")
        chain.set_params(**{"train.logistic_regression.C": 1.0})
        equal = chain.candidate("equal", root / "candidates")
        yield World(chain, uri, good, worse, equal)
        mlflow.set_tracking_uri(None)


class Registry:
    """The gate and the registry commands for one registered-model name."""

    def __init__(self, world: World, name: str, tmp: Path, capsys) -> None:
        self.world, self.name, self.tmp, self.capsys = world, name, tmp, capsys
        self.params = world.chain.write_params(tmp / "params.yaml", **{"registry.model_name": name})
        self.client = mlflow.MlflowClient(tracking_uri=world.uri)
        self.runs = 0

    def gate(self, candidate: Candidate) -> tuple[int, dict, str, str]:
        self.runs += 1
        out = self.tmp / f"gate-{self.runs}"
        self.capsys.readouterr()
        code, gate_json, gate_md = self.world.chain.gate(candidate, self.params, out)
        err = self.capsys.readouterr().err
        return code, read_json(gate_json), gate_md.read_text(), err

    def command(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = self.world.chain.registry(*args[:1], "--params", str(self.params), *args[1:])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def register(self, candidate: Candidate, gate_json: Path | None = None) -> tuple[int, str, str]:
        gate_json = gate_json or self.tmp / f"gate-{self.runs}" / "gate.json"
        return self.command(
            "register",
            "--model-dir", str(candidate.model_dir),
            "--gate", str(gate_json),
            "--dvc-lock", "dvc.lock",
        )  # fmt: skip

    def gate_and_register(self, candidate: Candidate) -> str:
        code, report, _, err = self.gate(candidate)
        assert code == 0, err
        code, out, err = self.register(candidate)
        assert code == 0, err
        return out

    def champion(self) -> str | None:
        return self.aliases().get("champion")

    def aliases(self) -> dict[str, str]:
        aliases = self.client.get_registered_model(self.name).aliases
        return {alias: str(version) for alias, version in aliases.items()}

    def versions(self) -> list[str]:
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return sorted(str(v.version) for v in found)

    def history(self) -> list[dict]:
        return load_history(self.client.get_registered_model(self.name))


@pytest.fixture
def registry(world, tmp_path, capsys, request):
    return Registry(world, f"m-{request.node.name[5:40]}", tmp_path, capsys)


def test_register_then_promote_gives_a_champion_that_resolves_with_all_the_tags(world, registry):
    code, report, markdown, _ = registry.gate(world.good)
    assert code == 0 and report["passed"] is True
    assert report["compared_with_champion"] is False
    assert "so there is no champion. Absolute thresholds only." in report["note"]
    assert "Absolute thresholds only." in markdown

    code, out, err = registry.register(world.good)
    assert code == 0, err
    assert f"'{registry.name}' version 1 (run {world.good.run_id}) is @challenger" in out
    assert registry.aliases() == {"challenger": "1"}
    code, out, err = registry.command("promote", "--reason", "first model")
    assert code == 0, err
    assert f"@champion -> version 1 (was none); models:/{registry.name}@champion" in out

    version = registry.client.get_model_version_by_alias(registry.name, "champion")
    assert str(version.version) == "1"
    tags = version.tags
    project = world.chain.root
    run = registry.client.get_run(world.good.run_id)
    assert tags["pipeline_run_id"] == world.good.run_id == version.run_id
    assert tags["git_commit"] == run.data.tags["git_commit"] and len(tags["git_commit"]) >= 40
    assert tags["dvc_lock_sha256"] == file_sha256(project / "dvc.lock")
    assert tags["data_sha256"] == file_sha256(project / "data/raw/dataset.parquet")
    assert tags["data_sha256"] == run.data.tags["data_sha256"]
    params = json.loads(tags["params"])
    assert params["train.estimator"] == "logistic_regression"
    assert params["registry.model_name"] == registry.name
    assert json.loads(tags["metrics"]) == world.good.metrics
    gate = json.loads(tags["gate"])
    assert gate["passed"] is True and gate["candidate"]["run_id"] == world.good.run_id
    assert tags["gate_passed"] == "true" and tags["estimator"] == "logistic_regression"
    assert tags["onnx_sha256"] == file_sha256(world.good.model_dir / "model.onnx")
    assert tags["saved_model"] == "none"  # scikit-learn family: ONNX only
    assert tags["promoted_by"] == actor() == "registry-test"
    assert tags["promotion_reason"] == "first model" and tags["previous_champion"] == "none"
    assert [(e["action"], e["version"]) for e in registry.history()] == [("promote", "1")]

    # models:/<name>@champion resolves to the ONNX MLflow model plus the export directory,
    # and the graph it holds reproduces the golden examples.
    uri = f"models:/{registry.name}@champion"
    assert "onnx" in mlflow.models.get_model_info(uri).flavors
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        export = find_export_dir(root)
        assert export == root / "export"
        assert {"model.onnx", "model.json", "golden.json"} <= {p.name for p in export.iterdir()}
        descriptor = ModelDescriptor.read(export)
        golden = read_json(export / "golden.json")
        rows = pd.DataFrame([r["inputs"] for r in golden["rows"]])
        proba = predict_onnx(export / "model.onnx", descriptor, rows)
        expected = np.array([r["probabilities"] for r in golden["rows"]])
        assert np.abs(proba - expected).max() <= golden["tolerance"]


def test_a_worse_candidate_fails_the_gate_cannot_be_registered_and_leaves_the_champion(
    world, registry
):
    # This project holds its multiclass models to f1_macro 0.9 (the shipped floor is 0.5).
    floor = {"registry.model_name": registry.name, "gate.min.multiclass.f1_macro": 0.9}
    registry.params = world.chain.write_params(registry.tmp / "params.yaml", **floor)
    registry.gate_and_register(world.good)
    assert registry.command("promote")[0] == 0
    champion_f1 = world.good.metrics["f1_macro"]
    worse_f1 = world.worse.metrics["f1_macro"]
    assert worse_f1 < 0.9  # the crippled model really is worse

    code, report, markdown, err = registry.gate(world.worse)
    assert code == 1
    assert report["passed"] is False and report["champion_version"] == "1"
    assert {"floor.f1_macro", "vs_champion.f1_macro"} <= set(report["failed"])
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["floor.f1_macro"]["value"] == pytest.approx(worse_f1)
    assert checks["floor.f1_macro"]["threshold"] == 0.9
    assert checks["vs_champion.f1_macro"]["threshold"] == pytest.approx(champion_f1 - 0.01)
    assert err.startswith("gate failed: ")
    assert (
        f"floor.f1_macro: f1_macro is {worse_f1:.4f}, below the minimum 0.9000 "
        "(gate.min.multiclass.f1_macro in params.yaml" in err
    )
    assert (
        f"vs_champion.f1_macro: f1_macro is {worse_f1:.4f}, more than 0.0100 below the "
        f"champion's {champion_f1:.4f} (version 1): threshold {champion_f1 - 0.01:.4f}." in err
    )
    assert "# Model gate: FAILED" in markdown
    assert f"| `floor.f1_macro` | {worse_f1:.4f} | >= 0.9000 | **FAIL** |" in markdown

    code, out, err = registry.register(world.worse)
    assert code == 1 and out == ""
    assert err.startswith("register failed: the gate failed for this model (failed checks: ")
    assert "floor.f1_macro" in err and "cannot be registered" in err
    assert registry.versions() == ["1"]
    assert registry.aliases() == {"challenger": "1", "champion": "1"}


def test_an_equal_candidate_passes_is_promoted_and_rollback_restores_the_champion(world, registry):
    registry.gate_and_register(world.good)
    assert registry.command("promote", "--reason", "baseline")[0] == 0

    code, report, markdown, err = registry.gate(world.equal)
    assert code == 0, err
    assert report["compared_with_champion"] is True and report["champion_version"] == "1"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["vs_champion.f1_macro"]["passed"] is True
    assert report["champion"]["metrics"]["f1_macro"] == pytest.approx(
        report["candidate"]["onnx_metrics"]["f1_macro"]
    )
    assert "Compared with the current champion" in markdown and "champion v1" in markdown

    code, out, err = registry.register(world.equal)
    assert code == 0, err
    assert registry.aliases() == {"challenger": "2", "champion": "1"}

    code, out, _ = registry.command("promote", "--reason", "retrained on the same data")
    assert code == 0 and "@champion -> version 2 (was 1)" in out
    assert registry.aliases() == {"challenger": "2", "champion": "2"}
    v2 = registry.client.get_model_version(registry.name, "2").tags
    assert v2["previous_champion"] == "1"
    assert v2["promotion_reason"] == "retrained on the same data"

    code, out, _ = registry.command("rollback", "--reason", "v2 misbehaves")
    assert code == 0 and "@champion -> version 1 (was 2)" in out
    assert registry.champion() == "1"
    v2 = registry.client.get_model_version(registry.name, "2").tags
    assert v2["rollback_reason"] == "v2 misbehaves" and v2["rolled_back_by"] == "registry-test"
    events = [(e["action"], e["version"], e["from"]) for e in registry.history()]
    assert events == [("promote", "1", None), ("promote", "2", "1"), ("rollback", "1", "2")]

    code, _, err = registry.command("rollback")
    assert code == 1
    assert "has no previous champion to roll back to" in err and "before version 1" in err
    assert registry.champion() == "1"


def test_registering_a_run_twice_and_promoting_the_champion_again_change_nothing(world, registry):
    registry.gate_and_register(world.good)
    code, out, _ = registry.register(world.good)
    assert code == 0
    assert f"run {world.good.run_id} is already version 1 of '{registry.name}'" in out
    assert registry.versions() == ["1"]

    assert registry.command("promote")[0] == 0
    code, out, _ = registry.command("promote", "--version", "1")
    assert code == 0 and "version 1 of" in out and "is already @champion; no change" in out
    assert len(registry.history()) == 1


def test_unknown_model_version_and_alias_fail_with_one_clear_paragraph(world, registry):
    code, _, err = registry.command("promote")
    assert code == 1
    assert err.startswith(f"promote failed: registered model '{registry.name}' does not exist")
    assert "make register" in err and "\n" not in err.strip()

    code, _, err = registry.command("rollback")
    assert code == 1 and f"registered model '{registry.name}' does not exist" in err

    registry.gate_and_register(world.good)
    code, _, err = registry.command("promote", "--version", "7")
    assert code == 1
    assert f"model '{registry.name}' has no version '7' (versions: 1)." in err

    code, _, err = registry.command("rollback")
    assert code == 1
    assert f"model '{registry.name}' has no '@champion' alias (aliases: @challenger -> v1)" in err

    # a gate report must belong to the export being registered
    code, _, err = registry.register(world.equal)
    assert code == 1
    assert "the gate report is for another export" in err and world.equal.run_id in err


@pytest.fixture(scope="module")
def other_data(world, tmp_path_factory) -> tuple[Chain, Candidate]:
    """A second project in the same store, trained on other data: the breast cancer table
    (binary, 30 numeric inputs such as ``mean radius``), as a user brings their own."""
    import yaml

    from tests.bundled import breast_cancer, contract_dict

    root = tmp_path_factory.mktemp("other-data")
    chain = new_chain(root / "project")
    table = breast_cancer()
    table.to_csv(chain.root / "data" / "cancer.csv", index=False)
    (chain.root / "data" / "contract.yaml").write_text(
        yaml.safe_dump(contract_dict(table, "diagnosis"), sort_keys=False)
    )
    chain.set_params(**{"data.source": "data/cancer.csv", "train.estimator": "logistic_regression"})
    chain.prepare()
    return chain, chain.candidate("cancer", root / "candidates")


def test_a_champion_of_other_data_is_not_compared_and_the_name_must_change(
    world, registry, other_data
):
    """Item 4 / build 7: the quick start's champion no longer blocks the first model of new
    data with a confusing scoring error; the gate says in one line why it did not compare, and
    register will not mix the two tables in one registered model."""
    registry.gate_and_register(world.good)
    assert registry.command("promote")[0] == 0
    chain, cancer = other_data
    params = chain.write_params(
        chain.root / "shared.yaml", **{"registry.model_name": registry.name}
    )
    code, gate_json, _ = chain.gate(cancer, params, registry.tmp / "other-gate")
    report = read_json(gate_json)
    assert code == 0, report["failed"]
    assert report["compared_with_champion"] is False
    assert report["note"] == (
        f"Not compared with the champion of '{registry.name}' (version 1): it is a multiclass "
        "model and this candidate is binary, so it is a model of other data. Give this data its "
        "own registered model: set registry.model_name in params.yaml (e.g. "
        "'cancer-classifier'). Absolute thresholds only."
    )
    assert not any(c["name"].startswith("vs_champion") for c in report["checks"])

    registry.capsys.readouterr()
    with contextlib.chdir(chain.root):
        from pipeline import registry as commands

        code = commands.main(
            [
                "register", "--params", str(params), "--model-dir", str(cancer.model_dir),
                "--gate", str(gate_json), "--dvc-lock", "dvc.lock",
            ]
        )  # fmt: skip
    assert code == 1
    err = registry.capsys.readouterr().err
    assert err.startswith(
        f"register failed: registered model '{registry.name}' belongs to other data: its "
        "champion (version 1) is a multiclass model, this export is binary; its champion "
        "(version 1) takes other inputs. Set registry.model_name in params.yaml"
    )
    assert registry.versions() == ["1"] and registry.champion() == "1"


def test_promote_refuses_a_version_gated_against_another_champion_and_register_finishes(
    world, registry
):
    """Two versions gated while there was no champion: after the first is promoted, the second
    was promoted past it though no gate compared the two. And a registration interrupted
    before its alias moved said "nothing to do" ever after, leaving @challenger behind."""
    registry.gate_and_register(world.good)
    registry.gate_and_register(world.equal)  # gated against no champion as well
    registry.client.delete_registered_model_alias(registry.name, "challenger")
    code, out, err = registry.register(world.equal)  # the interrupted registration, again
    assert code == 0, err
    assert registry.aliases() == {"challenger": "2"}

    assert registry.command("promote", "--version", "1")[0] == 0
    code, _, err = registry.command("promote", "--version", "2")
    assert code == 1
    assert "was gated against no champion, not the current champion (version 1)" in err
    assert "FORCE=1" in err and registry.champion() == "1"
    code, out, err = registry.command(
        "promote", "--version", "2", "--force", "--reason", "x" * 6000
    )
    assert code == 0, err
    reason = registry.client.get_model_version(registry.name, "2").tags["promotion_reason"]
    assert reason.startswith("[forced past the champion gate] xxx") and len(reason) == 1000


def test_an_export_edited_after_its_gate_is_not_registered(world, registry, tmp_path):
    """The gate hashed only model.onnx: a model.json edited afterwards (another range, other
    metrics) was registered and disagreed with the copy the server reads."""
    import dataclasses
    import shutil

    copy = dataclasses.replace(world.good, root=tmp_path / "good")
    shutil.copytree(world.good.root, copy.root)
    code, report, _, err = registry.gate(copy)
    assert code == 0, err
    assert report["candidate"]["descriptor_sha256"]
    descriptor = copy.model_dir / "model.json"
    descriptor.write_text(descriptor.read_text().replace('"estimator": "', '"estimator": "x'))
    code, _, err = registry.register(copy)
    assert code == 1
    assert "model.json changed since the gate judged this export" in err
    assert registry.versions() == []
