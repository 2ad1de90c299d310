"""UI fixtures: a project store with a real pipeline run and a champion, the MLflow UI started
the way ``make ui`` starts it, and headless Debian Chromium driven by Selenium.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import requests

from pipeline.ports import free_port
from tests.conftest import REPO_ROOT
from tests.integration.chain import new_chain


def _find(env_var: str, candidates: tuple[str, ...]) -> str:
    """The browser or driver: $ENV_VAR, else the first candidate path or command that exists.

    Debian's packages put them in /usr/bin; GitHub's Ubuntu runners ship Google Chrome and
    keep a matching chromedriver under $CHROMEWEBDRIVER.
    """
    if os.environ.get(env_var):
        return os.environ[env_var]
    for candidate in candidates:
        found = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if found and os.path.exists(found):
            return found
    return candidates[0]


CHROMIUM = _find("CHROME_BIN", ("/usr/bin/chromium", "chromium", "google-chrome"))
CHROMEDRIVER = _find(
    "CHROMEDRIVER_BIN",
    (
        "/usr/bin/chromedriver",
        os.path.join(os.environ.get("CHROMEWEBDRIVER", "/nonexistent"), "chromedriver"),
        "chromedriver",
    ),
)
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "ui"
#: The server took ~14 s to answer /health on this machine; allow for a busy one.
SERVER_START_LIMIT_S = 240


@dataclass
class Store:
    root: Path  # the project copy whose embedded store (mlruns/) the UI serves
    experiment_id: str
    run_id: str
    run_name: str
    model_name: str
    version: str


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """The real stages, gate, register and promote on the project's embedded sqlite store."""
    root = tmp_path_factory.mktemp("ui")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)  # the copy's own mlruns/mlflow.db
        env.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        chain = new_chain(root / "project")
        chain.set_params(**{"train.estimator": "logistic_regression"})  # the fastest to train
        chain.prepare()
        candidate = chain.candidate("good", root / "candidates")
        params = chain.root / "params.yaml"
        code, gate_json, _ = chain.gate(candidate, params, root / "gate")
        assert code == 0
        for command in (
            ["register", "--params", str(params), "--model-dir", str(candidate.model_dir),
             "--gate", str(gate_json), "--dvc-lock", "dvc.lock"],
            ["promote", "--params", str(params), "--reason", "ui test"],
        ):  # fmt: skip
            assert chain.registry(*command) == 0
        client = mlflow.MlflowClient()
        run = client.get_run(candidate.run_id)
        name = json.loads((candidate.model_dir / "model.json").read_text())["name"]
        version = client.get_model_version_by_alias(name, "champion")
        mlflow.set_tracking_uri(None)  # configure() set it (and the env var) for this process
    assert (chain.root / "mlruns" / "mlflow.db").is_file()
    return Store(
        chain.root, run.info.experiment_id, run.info.run_id, run.info.run_name, name,
        str(version.version),
    )  # fmt: skip


@pytest.fixture(scope="module")
def ui_url(store: Store):
    """``python -m pipeline.ui`` (what ``make ui`` runs) in the project, on a free port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = open(store.root / "ui.log", "w")  # noqa: SIM115 - closed after the server stops
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.ui", "--port", str(port)],
        cwd=store.root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_LIMIT_S
        while True:
            assert proc.poll() is None, (store.root / "ui.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the MLflow UI never answered /health"
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # pipeline.ui stops the server's process group
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1600,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def screenshot(browser):
    """Save a screenshot under test-artifacts/ui/ (CI uploads test-artifacts/)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(name: str) -> Path:
        path = SCREENSHOTS / name
        assert browser.save_screenshot(str(path)), path
        return path

    return save
