"""The folder layout says which modules are stages: ``pipeline/stages/`` holds exactly the stages
that ``dvc.yaml`` and ``monitoring/dvc.yaml`` run, and no stage imports another one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STAGES_DIR = ROOT / "pipeline" / "stages"


def _dvc_stages() -> dict[str, str]:
    stages = {}
    for dvcfile in (ROOT / "dvc.yaml", ROOT / "monitoring" / "dvc.yaml"):
        for name, stage in yaml.safe_load(dvcfile.read_text())["stages"].items():
            stages[name] = " ".join(stage["cmd"].split())
    return stages


def _stage_modules() -> set[str]:
    return {p.stem for p in STAGES_DIR.glob("*.py") if p.stem != "__init__"}


def stage_imports(source: str, stages: set[str]) -> set[str]:
    """The stage modules ``source`` imports (any form: ``import``, ``from``, function-level)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["pipeline", "stages"] and len(parts) > 2 and parts[2] in stages:
                found.add(parts[2])
    return found


def test_the_stages_folder_holds_exactly_the_dvc_stages():
    stages = _dvc_stages()
    assert _stage_modules() == set(stages)
    for name, cmd in stages.items():
        assert cmd.startswith(f"python -m pipeline.stages.{name} "), (name, cmd)


@pytest.mark.parametrize("stage", sorted(_stage_modules()))
def test_a_stage_imports_no_other_stage(stage):
    source = (STAGES_DIR / f"{stage}.py").read_text()
    assert stage_imports(source, _stage_modules() - {stage}) == set()


def test_shared_modules_import_no_stage():
    stages = _stage_modules()
    shared = [*(ROOT / "pipeline").glob("*.py"), *(ROOT / "model_spec").glob("*.py")]
    offenders = {p.name: found for p in shared if (found := stage_imports(p.read_text(), stages))}
    assert offenders == {}


def test_the_check_sees_every_import_form():
    stages = {"train", "preprocess", "gate"}
    source = (
        "import pipeline.stages.train\n"
        "from pipeline.stages import preprocess\n"
        "def f():\n    from pipeline.stages.gate import main\n"
        "from pipeline import metrics\n"
    )
    assert stage_imports(source, stages) == {"train", "preprocess", "gate"}
