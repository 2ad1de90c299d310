"""What `make team-up` prints: every URL of the team stack a person opens (no stack is started)."""

from __future__ import annotations

import deploy.stack as stack_module
from deploy.stack import Stack, State

PORTS = {"mlflow": 15001, "s3": 15002, "postgres": 15003, "prometheus": 15004}


def _running_stack(tmp_path, monkeypatch, pids: dict[str, int]) -> Stack:
    stack = Stack(tmp_path / "team")
    stack.root.mkdir()
    stack._save(State(ports=dict(PORTS), pids=pids))
    monkeypatch.setattr(Stack, "_running", lambda self, state: True)
    monkeypatch.setattr(stack_module, "_http_ok", lambda url: True)
    return stack


def test_up_names_the_prometheus_url_when_the_stack_runs_prometheus(tmp_path, monkeypatch):
    stack = _running_stack(tmp_path, monkeypatch, {"mlflow": 11, "prometheus": 12})
    line = stack.up()
    assert "MLflow at http://127.0.0.1:15001" in line
    assert "Prometheus at http://127.0.0.1:15004" in line


def test_up_names_no_prometheus_when_none_was_started(tmp_path, monkeypatch):
    stack = _running_stack(tmp_path, monkeypatch, {"mlflow": 11})
    assert "Prometheus" not in stack.up()
