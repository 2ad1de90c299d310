"""The Grafana dashboard is build.py's output and only asks for metrics that exist.

Whether each panel's query returns data is checked against a real Prometheus in
test_stack.py.
"""

from __future__ import annotations

import json
import re
import runpy

import yaml

from tests.monitoring.conftest import MONITORING, RULES

DASHBOARD = MONITORING / "grafana" / "dashboard.json"
#: What the server exposes (serving/metrics.py) and the monitor pushes (pipeline/stages/monitor.py).
KNOWN = {
    "serving_requests_total", "serving_request_duration_seconds_bucket",
    "serving_predictions_total", "serving_model_info", "serving_ready_workers",
    "serving_model_reloads_total", "serving_model_reload_failures_total",
    "serving_prediction_value_bucket", "monitor_feature_drift", "monitor_feature_drift_score",
    "monitor_drift_share", "monitor_prediction_drift", "monitor_rows",
    "monitor_last_run_timestamp_seconds", "ALERTS",
}  # fmt: skip


def test_dashboard_json_is_build_py_output():
    build = runpy.run_path(str(MONITORING / "grafana" / "build.py"))
    assert DASHBOARD.read_text() == build["render"](), "run python monitoring/grafana/build.py"


def test_panels_ask_for_known_metrics_only():
    dashboard = json.loads(DASHBOARD.read_text())
    recorded = {
        r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
        if "record" in r
    }  # fmt: skip
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 14
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", target["expr"]))
            names |= set(re.findall(r"\(\s*([a-z_:]+_[a-z_:]+)\s*\)", target["expr"]))
            unknown = names - KNOWN - recorded
            assert not unknown, f"{panel['title']}: {unknown}"
