"""The Prometheus rules pass promtool's checks and their own unit tests, and those tests bite."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.monitoring.conftest import RULE_TESTS, RULES, system_tool


def promtool(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [system_tool("promtool"), *map(str, args)],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def alerts_in(path) -> list[str]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [r["alert"] for g in groups for r in g["rules"] if "alert" in r]


def test_rules_are_valid():
    proc = promtool("check", "rules", RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 16 rules found" in proc.stdout


def test_rule_unit_tests_pass():
    proc = promtool("test", "rules", *(p.name for p in RULE_TESTS), cwd=RULES.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_has_a_firing_case():
    tests = [t for path in RULE_TESTS for t in yaml.safe_load(path.read_text())["tests"]]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    assert set(alerts_in(RULES)) == firing
    assert set(alerts_in(RULES)) - {"ServingNotReady"} <= quiet  # each also shown quiet


@pytest.mark.parametrize(
    ("rule", "weaker", "failure"),
    [
        ("ratio_rate5m > 0.05", "ratio_rate5m > 0.2", "ServingHighErrorRatio, time: 10m"),
        ("p99_5m > 0.25", "p99_5m > 0.5", "ServingHighLatencyP99, time: 20m"),
        ("> 2 * 86400", "> 3 * 86400", "MonitorNotRunning, time: 2d1h30m"),
    ],
)
def test_a_weakened_rule_fails_its_tests(tmp_path, rule, weaker, failure):
    """The unit tests catch a changed threshold: the alert stays quiet where it must fire."""
    for path in RULE_TESTS:
        shutil.copy(path, tmp_path / path.name)
    text = RULES.read_text()
    assert rule in text
    (tmp_path / "rules.yml").write_text(text.replace(rule, weaker))
    proc = promtool("test", "rules", *(p.name for p in RULE_TESTS), cwd=tmp_path)
    assert proc.returncode == 1
    assert f"alertname: {failure}" in proc.stdout + proc.stderr
