"""The MLflow UI started by ``make ui``, driven in headless Chromium: runs, artifacts, aliases."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.ui

#: The UI is a React app that loads its data after the page: wait for elements, not for time.
RENDER_LIMIT_S = 90


def test_experiment_page_lists_the_pipeline_run(store, ui_url, browser, screenshot):
    browser.get(f"{ui_url}/#/experiments/{store.experiment_id}/runs")
    link = WebDriverWait(browser, RENDER_LIMIT_S).until(
        ec.visibility_of_element_located((By.XPATH, f"//a[normalize-space(.)='{store.run_name}']"))
    )
    assert link.get_attribute("href").endswith(
        f"#/experiments/{store.experiment_id}/runs/{store.run_id}"
    )
    assert "tabular-mlops" in browser.find_element(By.TAG_NAME, "body").text
    assert screenshot("experiment-runs.png").stat().st_size > 10_000


def test_run_artifacts_are_served_from_the_local_store(store, ui_url, browser, screenshot):
    browser.get(f"{ui_url}/#/experiments/{store.experiment_id}/runs/{store.run_id}/artifacts")
    wait = WebDriverWait(browser, RENDER_LIMIT_S)

    def entry(name: str):
        return wait.until(
            ec.element_to_be_clickable((By.XPATH, f"//*[normalize-space(text())='{name}']"))
        )

    entry("evaluate")  # logged by the evaluate stage
    entry("gate").click()  # logged by the gate stage; open it and preview the report
    entry("gate.md").click()
    wait.until(
        ec.visibility_of_element_located(
            (By.XPATH, "//*[normalize-space(text())='Model gate: PASSED']")
        )
    )
    screenshot("run-artifacts.png")


def _aliases(browser) -> list[str]:
    spans = browser.find_elements(By.XPATH, "//span[starts-with(normalize-space(.), '@')]")
    return [" ".join(s.text.replace("\xa0", " ").split()) for s in spans]


def test_registered_model_page_shows_the_champion_alias(store, ui_url, browser, screenshot):
    browser.get(f"{ui_url}/#/models/{store.model_name}")
    aliases = WebDriverWait(browser, RENDER_LIMIT_S).until(
        lambda b: (found := _aliases(b)) and "@ champion" in found and found
    )
    assert "@ champion" in aliases and "@ challenger" in aliases
    version_link = browser.find_element(
        By.XPATH, f"//a[contains(@href, '/models/{store.model_name}/versions/{store.version}')]"
    )
    assert version_link.is_displayed()
    screenshot("registered-model.png")
