"""The serving image's recipe: pinned like uv.lock, serving deps only, non-root, healthcheck."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.conftest import REPO_ROOT

SERVING = REPO_ROOT / "serving"


def pins(path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", line)
        if match:
            found[match[1].lower().replace("_", "-")] = match[2]
    return found


@pytest.fixture(scope="module")
def locked() -> dict[str, str]:
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if "version" in p}


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-registry.txt"])
def test_requirements_are_pinned_as_in_uv_lock(name, locked):
    path = SERVING / name
    pinned = pins(path)
    assert pinned, f"{name} pins nothing"
    drift = {
        pkg: (version, locked.get(pkg))
        for pkg, version in pinned.items()
        if locked.get(pkg) != version
    }
    assert not drift, f"{name} differs from uv.lock (rerun the command in its header): {drift}"
    assert "--hash=sha256:" in path.read_text()


def test_image_requirements_are_serving_only(locked):
    pinned = pins(SERVING / "requirements.txt")
    assert {"flask", "granian", "numpy", "onnxruntime", "orjson", "prometheus-client"} <= set(
        pinned
    )
    assert "gunicorn" not in pinned  # the previous stack: bench-serve's peer only
    heavy = {
        "tensorflow",
        "tensorflow-cpu",
        "keras",
        "scikit-learn",
        "pandas",
        "dvc",
        "great-expectations",
        "mlflow",
        "mlflow-skinny",
        "skl2onnx",
        "onnx",
        "scipy",
    }
    assert not heavy & set(pinned)
    assert not {"tensorflow-cpu", "scikit-learn", "pandas", "mlflow"} & set(
        pins(SERVING / "requirements-registry.txt")
    )


def test_dockerfile_contract():
    text = (SERVING / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "--require-hashes -r /tmp/requirements.txt" in text
    assert re.search(
        r"^HEALTHCHECK .*\n\s+CMD \[\"python\", \"-m\", \"serving.healthcheck\"\]", text, re.M
    )
    assert "ARG MODEL_DIR=models/export" in text
    assert "SERVING_BIND=0.0.0.0:8000" in text
    assert re.search(r'^ENTRYPOINT \["python", "-m", "serving.server"\]$', text, re.M)
