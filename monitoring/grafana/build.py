"""Write dashboard.json, the Grafana dashboard for the server and the monitor, from this file.

    python monitoring/grafana/build.py        # rewrites monitoring/grafana/dashboard.json

Panels are listed once below as (title, kind, unit, [(PromQL, legend)]); the test suite runs
every query against a real Prometheus and checks that the JSON is this file's output.
Variables: ``$datasource`` (a Prometheus data source), ``$job`` (the server's scrape job,
default ``serving``) and ``$instance``.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).with_name("dashboard.json")
SEL = 'job=~"$job", instance=~"$instance"'
API = f'{SEL}, endpoint!~"/metrics|/health/.*"'
RATE = "$__rate_interval"
LATENCY = "serving_request_duration_seconds_bucket"

ROWS: list[tuple[str, list[tuple[str, str, str, list[tuple[str, str]]]]]] = [
    (
        "Traffic and errors",
        [
            (
                "Requests per second by endpoint",
                "timeseries",
                "reqps",
                [
                    (
                        f"sum by (endpoint) (rate(serving_requests_total{{{SEL}}}[{RATE}]))",
                        "{{endpoint}}",
                    ),
                ],
            ),
            (
                "Errors per second by status",
                "timeseries",
                "reqps",
                [
                    (
                        f'sum by (status) (rate(serving_requests_total{{{API}, status=~"[45].."}}'
                        f"[{RATE}]))",
                        "{{status}}",
                    ),
                ],
            ),
            (
                "5xx share of API requests",
                "timeseries",
                "percentunit",
                [
                    (f"instance:serving_api_errors:ratio_rate5m{{{SEL}}}", "{{instance}}"),
                ],
            ),
        ],
    ),
    (
        "Latency",
        [
            (
                "/predict latency percentiles",
                "timeseries",
                "s",
                [
                    (
                        f"histogram_quantile({q}, sum by (le) (rate({LATENCY}"
                        f'{{{SEL}, endpoint="/predict"}}[{RATE}])))',
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.9, 0.99)
                ],
            ),
            (
                "Latency p99 by endpoint",
                "timeseries",
                "s",
                [
                    (
                        f"histogram_quantile(0.99, sum by (endpoint, le) (rate({LATENCY}"
                        f"{{{SEL}}}[{RATE}])))",
                        "{{endpoint}}",
                    ),
                ],
            ),
        ],
    ),
    (
        "Model",
        [
            (
                "Predictions per second by class and variant",
                "timeseries",
                "short",
                [
                    (
                        f"sum by (class, variant) (rate(serving_predictions_total{{{SEL}}}"
                        f"[{RATE}]))",
                        "{{class}} {{variant}}",
                    ),
                ],
            ),
            (
                "Predicted value percentiles (regression)",
                "timeseries",
                "short",
                [
                    (
                        f"histogram_quantile({q}, sum by (le, variant) (rate(serving_prediction_"
                        f"value_bucket{{{SEL}}}[{RATE}])))",
                        f"p{int(q * 100)} {{{{variant}}}}",
                    )
                    for q in (0.05, 0.5, 0.95)
                ],
            ),
            (
                "Model version and variant serving",
                "table",
                "short",
                [
                    (
                        "sum by (name, version, source, variant) "
                        f"(serving_model_info{{{SEL}}}) > 0",
                        "{{name}} {{version}} {{variant}}",
                    ),
                ],
            ),
            (
                "Ready workers",
                "stat",
                "short",
                [
                    (f"sum by (instance) (serving_ready_workers{{{SEL}}})", "{{instance}}"),
                ],
            ),
            (
                "Model reloads and failed loads (1 h)",
                "timeseries",
                "short",
                [
                    (
                        f"sum by (variant) (increase(serving_model_reloads_total{{{SEL}}}[1h]))",
                        "{{variant}} reloads",
                    ),
                    (
                        "sum by (variant, step) "
                        f"(increase(serving_model_reload_failures_total{{{SEL}}}[1h]))",
                        "{{variant}} failed at {{step}}",
                    ),
                ],
            ),
        ],
    ),
    (
        "Data drift (the monitor step, through the pushgateway)",
        [
            (
                "Drift score by feature (1 = threshold)",
                "bargauge",
                "short",
                [
                    ("max by (feature) (monitor_feature_drift_score)", "{{feature}}"),
                ],
            ),
            (
                "Drifted features",
                "table",
                "short",
                [
                    ("max by (feature) (monitor_feature_drift) == 1", "{{feature}}"),
                ],
            ),
            (
                "Share of drifted features / prediction drift",
                "stat",
                "short",
                [
                    ("max(monitor_drift_share)", "drift share"),
                    ("max(monitor_prediction_drift)", "prediction drift"),
                ],
            ),
            (
                "Rows in the last window / hours since the last run",
                "stat",
                "short",
                [
                    ("max(monitor_rows)", "rows"),
                    ("(time() - max(monitor_last_run_timestamp_seconds)) / 3600", "hours ago"),
                ],
            ),
            (
                "Alerts firing",
                "table",
                "short",
                [
                    ('ALERTS{alertstate="firing"}', "{{alertname}} {{instance}}{{feature}}"),
                ],
            ),
        ],
    ),
]


def _variable(name: str, query: str, default: str) -> dict:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": name == "instance",
        "allValue": ".*" if name == "instance" else None,
        "current": {"text": default, "value": default},
    }


def build() -> dict:
    panels, y, panel_id = [], 0, 1
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id, y = panel_id + 1, y + 1
        width = 24 // len(row_panels) if len(row_panels) <= 3 else 8
        for i, (title, kind, unit, targets) in enumerate(row_panels):
            x = (i * width) % 24
            if i and x == 0:
                y += 8
            panels.append(
                {
                    "id": panel_id,
                    "type": kind,
                    "title": title,
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "gridPos": {"h": 8, "w": width, "x": x, "y": y},
                    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "options": {},
                    "targets": [
                        {
                            "refId": chr(ord("A") + j),
                            "expr": expr,
                            "legendFormat": legend,
                            "instant": kind in ("table", "stat", "bargauge"),
                        }
                        for j, (expr, legend) in enumerate(targets)
                    ],
                }
            )
            panel_id += 1
        y += 8
    return {
        "uid": "tabular-mlops-serving",
        "title": "tabular-mlops: serving and drift",
        "description": "The prediction server's traffic, latency, errors and model, and the "
        "monitor step's drift. Built by monitoring/grafana/build.py.",
        "tags": ["tabular-mlops"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "Prometheus"},
                },
                _variable("job", "label_values(serving_model_info, job)", "serving"),
                _variable(
                    "instance", 'label_values(serving_model_info{job=~"$job"}, instance)', "All"
                ),
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
