"""A real Prometheus and pushgateway on 127.0.0.1, for the monitoring stack tests.

Prometheus runs the repository's own scrape config (monitoring/prometheus/prometheus.yml)
with the targets and intervals replaced, and a rendered copy of the real rules in which every
``for:`` is a few seconds: the expressions and thresholds are the committed ones.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from pipeline.ports import free_port
from tests.conftest import REPO_ROOT
from tests.monitoring.conftest import MONITORING, RULES, system_tool

SCRAPE_CONFIG = MONITORING / "prometheus" / "prometheus.yml"


def render_rules(source: Path, dest: Path, hold: str) -> Path:
    """The rules with every ``for:`` set to ``hold`` (e.g. ``3s``), nothing else changed."""
    text, count = re.subn(r"(?m)^(\s+for:\s*)\S+$", rf"\g<1>{hold}", source.read_text())
    assert count > 0, f"no `for:` in {source}"
    dest.write_text(text)
    return dest


class Process:
    """A server process with its log, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, args: list[str], log: Path, ready_url: str):
        self.log_path = log
        self.ready_url = ready_url
        self._log = open(log, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, deadline_s: float = 60.0) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.ready_url, timeout=10).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready within {deadline_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Pushgateway(Process):
    def __init__(self, root: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [
                system_tool("prometheus-pushgateway"),
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            root / "pushgateway.log",
            self.url + "/-/ready",
        )


class Prometheus(Process):
    """``prometheus`` scraping ``serving_targets`` (job ``serving``) and the pushgateway."""

    def __init__(self, root: Path, serving_targets: list[str], pushgateway: str, hold: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        render_rules(RULES, root / "rules.yml", hold)
        config = yaml.safe_load(SCRAPE_CONFIG.read_text())
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        config["rule_files"] = ["rules.yml"]
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        assert set(jobs) == {"serving", "pushgateway"}, set(jobs)
        jobs["serving"]["static_configs"] = [{"targets": serving_targets}]
        jobs["pushgateway"]["static_configs"] = [{"targets": [pushgateway]}]
        config.pop("alerting", None)  # no Alertmanager here; the API shows alert states
        (root / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        shutil.rmtree(root / "data", ignore_errors=True)
        super().__init__(
            [
                system_tool("prometheus"),
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            root / "prometheus.log",
            self.url + "/-/ready",
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = reply.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def alerts(self, state: str = "firing") -> set[tuple[str, str]]:
        """``{(alertname, instance or feature or job)}`` of the alerts in ``state``."""
        reply = requests.get(self.url + "/api/v1/alerts", timeout=10).json()
        found = set()
        for alert in reply["data"]["alerts"]:
            if alert["state"] == state:
                labels = alert["labels"]
                subject = labels.get("instance") or labels.get("feature") or labels.get("job")
                found.add((labels["alertname"], subject))
        return found

    def wait_for(self, what: str, check, deadline_s: float = 120.0) -> Any:
        """Poll ``check()`` until it returns something truthy; fail naming ``what``."""
        deadline = time.monotonic() + deadline_s
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.5)
        raise AssertionError(f"{what} did not happen within {deadline_s} s (last: {last!r})")


#: ``make serve``: the launcher with granian, as the image runs it.
SERVE = [sys.executable, "-m", "serving.server"]
#: The same app under gunicorn's sync workers, which hand the body stream to the app, so a
#: client that sends its body slowly shows up in the latency histogram (granian's bridge reads
#: the body first, with a deadline).
GUNICORN = [
    str(Path(sys.executable).parent / "gunicorn"),
    "-c",
    str(REPO_ROOT / "serving" / "gunicorn.conf.py"),
    "serving.app:create_app()",
]


class Server(Process):
    """The prediction server on a free port, started with ``command``; its settings are
    ``SERVING_*`` variables."""

    def __init__(self, env: dict[str, str], root: Path, name: str, command: list[str] = SERVE):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.instance = f"127.0.0.1:{self.port}"
        full = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SERVING_")},
            "SERVING_BIND": self.instance,
            "SERVING_ACCESS_LOG": str(root / f"{name}-access.log"),
            "SERVING_WORKERS": "2",
            "SERVING_DRAIN_SECONDS": "0.5",
            **env,
        }
        self.workers = float(full["SERVING_WORKERS"])
        self._log = open(root / f"{name}.log", "w")  # noqa: SIM115 (closed in stop())
        self.log_path = root / f"{name}.log"
        self.ready_url = self.url + "/health/live"
        self.proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env=full, stdout=self._log, stderr=subprocess.STDOUT
        )

    def metrics(self) -> dict[tuple, float]:
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(self.url + "/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def wait_ready(self, ready: bool = True, deadline_s: float = 120.0) -> None:
        """Until every worker has its model (``ready``), or until it answers at all; a busy
        machine can take seconds per answer, so a slow reply is retried, not a failure."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                workers = self.metrics().get(("serving_ready_workers", ()))
                if not ready or workers == self.workers:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not {'ready' if ready else 'up'}:\n{self.log()}")


def wait_for_lines(path: Path, count: int, deadline_s: float = 60.0) -> None:
    """The server's log writer is a thread: wait until ``path`` holds ``count`` lines."""
    deadline = time.monotonic() + deadline_s
    seen = 0
    while time.monotonic() < deadline:
        seen = path.read_bytes().count(b"\n") if path.exists() else 0
        if seen >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} has {seen} lines, expected {count}")
