"""Load test of the prediction server against its previous stack and ``mlflow models serve``,
in one run.

    python -m benchmarks.bench_serve --model-dir models/export

With wrk (``apt-get install wrk``) on 127.0.0.1, the load generator on the same machine:

1. time to ready: from starting ``python -m serving.server`` to the first ``/health/ready``
   200, and to every worker ready (``serving_ready_workers``), over a few cold starts;
2. one-row and 100-row requests at 16 connections, interleaved: ``ours`` (granian, what
   ships: token, validation, metrics, JSON access log and the prediction log on), ``gunicorn``
   (the same app under the previous stack, ``serving/gunicorn.conf.py``, 2 sync workers, same
   settings) and ``ours-nolog`` (ours with the prediction log off: the log's cost);
3. hostile clients against ours: 100 slow connections (headers or body at one byte per
   second, half with a token) while wrk measures normal clients; a lying Content-Length;
   kill -9 of a worker and SIGTERM, each under 16 keep-alive connections (``benchmarks/load``);
4. ``mlflow models serve`` (2 uvicorn workers, ``--env-manager local``) on the same ONNX file
   (``mlflow-onnx``) and, when the pipeline's run is in the store, on the native model the
   train stage logged (``mlflow-native``);
5. a soak of ours: 64 connections for 60 s after a warm-up, counting errors and 5xx, and the
   resident memory of the server's processes after warm-up and at the end.

Prints a Markdown table for BENCHMARKS.md and writes the numbers to
``.bench/serve/results.json``. Exits 1 when a target of issue 10 is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOKEN = "bench-token-" + os.urandom(6).hex()

TARGET_RPS = 6000.0
TARGET_RPS_100 = 3000.0
TARGET_P99_MS = 10.0
TARGET_RATIO_GUNICORN = 1.7
TARGET_RATIO_MLFLOW = 20.0
TARGET_SLOW_P99_MS = 20.0
TARGET_READY_S = 2.0
TARGET_RSS_GROWTH = 0.10
SLOW_CONNECTIONS = 100


# ---------------------------------------------------------------------- wrk
@dataclass
class WrkResult:
    label: str
    connections: int
    seconds: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    socket_errors: int = 0
    load_before: float = 0.0
    load_after: float = 0.0


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def run_wrk(
    url: str,
    body: str,
    headers: dict[str, str],
    *,
    connections: int,
    seconds: int,
    label: str,
    threads: int = 2,
    timeout_s: int = 10,
) -> WrkResult:
    lua = "\n".join(
        ['wrk.method = "POST"']
        + [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
        + [f"wrk.body = [==[{body}]==]"]
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(lua)
    load_before = os.getloadavg()[0]
    try:
        proc = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds}s",
                f"--timeout={timeout_s}s",
                "--latency",
                "-s",
                handle.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
    finally:
        os.unlink(handle.name)
    out = proc.stdout
    if proc.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out}\n{proc.stderr}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        label=label,
        connections=connections,
        seconds=seconds,
        requests=int(re.search(r"(\d+) requests in", out)[1]),
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        p50_ms=_ms(latency["50"]),
        p99_ms=_ms(latency["99"]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(x) for x in errors.groups()) if errors else 0,
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )


# ---------------------------------------------------------------------- processes


def http(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, MiB."""
    total = 0
    for current in _tree(pid):
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(match[1]) if match else 0
    return total / 1024


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by ``pid`` and its descendants:
    what a request costs the server, whatever else runs on the machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for current in _tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


class Server:
    def __init__(self, cmd: list[str], env: dict[str, str], port: int, log: Path):
        self.port, self.log = port, log
        self._log = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait(self, path: str, done, deadline_s: float = 120.0) -> float:
        """Seconds from start until ``done(status, body)`` holds for GET ``path``."""
        while time.monotonic() - self.started < deadline_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                status, body = http(f"http://127.0.0.1:{self.port}{path}", timeout=1.0)
                if done(status, body):
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"server not ready in {deadline_s} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def start_ours(
    model_dir: Path,
    work: Path,
    extra_env: dict[str, str],
    *,
    stack: str = "granian",
    prediction_log: bool = True,
) -> Server:
    """Our app: under ``python -m serving.server`` (granian, what ships), or under the
    previous stack, gunicorn with ``serving/gunicorn.conf.py`` (2 sync workers): the peer the
    new stack is measured against. Token, validation, metrics and the JSON access log are on
    in both; the prediction log too unless ``prediction_log`` is False."""
    port = free_port()
    env = {
        **os.environ,
        "SERVING_MODEL_DIR": str(model_dir),
        "SERVING_BIND": f"127.0.0.1:{port}",
        "SERVING_API_TOKEN": TOKEN,
        "SERVING_ACCESS_LOG": str(work / f"access-{port}.log"),
        **extra_env,
    }
    if prediction_log:
        env["SERVING_PREDICTION_LOG"] = str(work / f"predictions-{port}.jsonl")
    if stack == "gunicorn":
        cmd = [str(BIN / "gunicorn"), "-c", "serving/gunicorn.conf.py", "serving.app:create_app()"]
    else:
        cmd = [sys.executable, "-m", "serving.server"]
    return Server(cmd, env, port, work / f"{stack}-{port}.log")


def start_anchor(model_dir: Path, work: Path) -> Server:
    """The calibration peer (benchmarks/anchor_app.py): bare Flask + gunicorn + ONNX Runtime."""
    port = free_port()
    env = {**os.environ, "SERVING_MODEL_DIR": str(model_dir)}
    cmd = [
        str(BIN / "gunicorn"),
        "-w",
        "2",
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "benchmarks.anchor_app:app",
    ]
    return Server(cmd, env, port, work / f"anchor-{port}.log")


def ready_workers(status: int, body: str) -> float:
    if status != 200:
        return 0.0
    match = re.search(r"^serving_ready_workers (\S+)$", body, re.M)
    return float(match[1]) if match else 0.0


def start_mlflow(model_path: Path, work: Path, name: str) -> Server:
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        str(model_path),
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "2",
    ]
    return Server(cmd, env, port, work / f"mlflow-{name}.log")


# ---------------------------------------------------------------------- peers' models
def save_onnx_peer(model_dir: Path, out: Path, rows: list[dict[str, Any]]) -> Path:
    """The exported ONNX file as an MLflow ONNX model with a tensor signature, as the export
    stage logs it (one ``[-1, 1]`` tensor per feature)."""
    import mlflow
    import numpy as np
    import onnx
    from mlflow.models import infer_signature

    descriptor = json.loads((model_dir / "model.json").read_text())
    feeds = {}
    for spec in descriptor["inputs"]:
        values = [row[spec["name"]] for row in rows]
        name = spec.get("onnx_name", spec["name"])
        if spec["kind"] == "numeric":
            feeds[name] = np.array(values, dtype=np.float64).reshape(-1, 1)
        else:
            feeds[name] = np.array(values, dtype=object).reshape(-1, 1)
    outputs = {
        "label": np.array([descriptor["classes"][0]] * len(rows), dtype=object),
        "probabilities": np.zeros((len(rows), len(descriptor["classes"])), dtype=np.float32),
    }
    path = out / "mlflow-onnx"
    mlflow.onnx.save_model(
        onnx.load(str(model_dir / "model.onnx")),
        str(path),
        signature=infer_signature(feeds, outputs),
        pip_requirements=["onnxruntime"],
        onnx_execution_providers=["CPUExecutionProvider"],
        save_as_external_data=False,
    )
    return path


def native_peer(model_dir: Path, out: Path) -> tuple[Path, dict[str, Any]] | None:
    """The native model the train stage logged to the pipeline's MLflow run (the run named in
    the descriptor's lineage), downloaded for ``mlflow models serve``, and its saved serving
    input example. That model is what MLflow itself serves for this pipeline: the fitted
    scikit-learn pipeline on raw columns, or the Keras network on transformed features."""
    import mlflow

    from pipeline.tracking import tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    descriptor = json.loads((model_dir / "model.json").read_text())
    run_id = (descriptor.get("lineage") or {}).get("run_id")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri())
    try:
        run = client.get_run(run_id)
    except Exception:  # no store, no run: nothing to compare with
        return None
    logged = [
        m
        for m in client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )
        if m.name == "model"
    ]
    if not logged:
        return None
    mlflow.set_tracking_uri(tracking_uri())
    path = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{logged[0].model_id}", dst_path=str(out / "mlflow-native")
        )
    )
    example = json.loads((path / "serving_input_example.json").read_text())
    return path, example


def example_bodies(example: dict[str, Any], sizes: dict[str, int]) -> dict[str, str]:
    """Bodies of ``n`` rows in the format of an MLflow serving input example."""
    ((key, value),) = example.items()
    bodies = {}
    for label, n in sizes.items():
        if key == "dataframe_split":
            rows = (value["data"] * n)[:n]
            bodies[label] = json.dumps({key: {"columns": value["columns"], "data": rows}})
        else:  # "inputs", "instances" or "dataframe_records": a list of rows
            bodies[label] = json.dumps({key: (value * n)[:n]})
    return bodies


# ---------------------------------------------------------------------- the run
@dataclass
class Report:
    machine: dict[str, Any] = field(default_factory=dict)
    ready_first_s: list[float] = field(default_factory=list)
    ready_all_s: list[float] = field(default_factory=list)
    runs: list[WrkResult] = field(default_factory=list)
    soak: WrkResult | None = None
    rss_after_warmup_mb: float = 0.0
    rss_end_mb: float = 0.0
    soak_5xx: float = 0.0
    soak_recycles: int = 0
    slow: WrkResult | None = None
    slow_answers: dict[str, Any] = field(default_factory=dict)
    lying_length: dict[str, Any] = field(default_factory=dict)
    sigterm: dict[str, Any] = field(default_factory=dict)
    kill9: dict[str, Any] = field(default_factory=dict)
    log_rows: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def run(self, label: str) -> WrkResult | None:
        return next((r for r in self.runs if r.label == label), None)


def bench_server(
    report: Report,
    name: str,
    url: str,
    headers: dict[str, str],
    bodies: dict[str, str],
    seconds: int,
    warmup: int,
) -> None:
    run_wrk(url, bodies["1 row"], headers, connections=16, seconds=warmup, label="warm-up")
    for rows, body in bodies.items():
        result = run_wrk(
            url, body, headers, connections=16, seconds=seconds, label=f"{name}, {rows}"
        )
        report.runs.append(result)
        print(
            f"  {result.label}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, non-2xx {result.non_2xx}, "
            f"socket errors {result.socket_errors} (load {result.load_before:.2f})",
            flush=True,
        )


#: The prediction log's variants ``--log-cost`` compares (extra server environment, or None
#: for the log off): as shipped, and logging every row (no rate limit).
#: Each maps a server's name to its extra environment (None: the prediction log off); the
#: first is the baseline the others are compared with.
LOG_VARIANTS: dict[str, dict[str, str] | None] = {
    "log off": None,
    "log on": {},
    "every row": {"SERVING_PREDICTION_LOG_RATE_LIMIT": "0"},
}


#: The event loop granian runs the RSGI app on (``SERVING_LOOP``), the prediction log as shipped.
LOOP_VARIANTS: dict[str, dict[str, str] | None] = {
    "asyncio": {"SERVING_LOOP": "asyncio"},
    "uvloop": {"SERVING_LOOP": "uvloop"},
}


def variant_cost(model_dir, work, extra_env, body, headers, args, variants, rounds) -> int:
    """The prediction log's cost: three servers up side by side (log off, log on as shipped,
    log on for every row), measured in turn with ``ROUNDS`` short one-row runs each (the
    order rotated each round, the servers restarted every 10 rounds). This machine's speed
    drifts by 10-30% over tens of seconds; runs seconds apart in rotation see the same
    drift, so the ratio of their sums measures the log, not the drift (each set of servers is
    started in another order). Also the server's
    CPU seconds per request and the share of rows the shipped log wrote."""
    from serving.server import usable_cpus

    workers = float(extra_env.get("SERVING_WORKERS") or usable_cpus())
    names = list(variants)
    base = names[0]
    totals = {name: [0, 0.0, 0.0] for name in names}  # requests, seconds, CPU seconds
    ratios: dict[str, list[float]] = {name: [] for name in names[1:]}
    p99s: dict[str, list[float]] = {name: [] for name in names}
    servers: dict[str, Server] = {}
    logged_rows = {name: 0 for name in names[1:]}

    def count_logged(sign: int = 1) -> None:
        for name in names[1:]:
            _, text = http(f"http://127.0.0.1:{servers[name].port}/metrics")
            match = re.search(
                r'^serving_prediction_log_rows_total\{outcome="written"\} (\S+)$', text, re.M
            )
            logged_rows[name] += sign * float(match[1]) if match else 0

    try:
        for round_ in range(rounds):
            if round_ % 10 == 0:  # a fresh set: no one process's luck decides the result
                if servers:
                    count_logged()
                for server in servers.values():
                    server.stop()
                servers = {}
                first = round_ // 10 % len(names)  # each set starts them in another order
                for name in names[first:] + names[:first]:
                    env = variants[name]
                    server_env = {**extra_env, **(env or {})}
                    servers[name] = start_ours(
                        model_dir, work, server_env, prediction_log=env is not None
                    )
                for server in servers.values():
                    server.wait("/metrics", lambda s, b: ready_workers(s, b) >= workers)
                    url = f"http://127.0.0.1:{server.port}/predict"
                    run_wrk(url, body, headers, connections=16, seconds=args.warmup, label="warm")
                count_logged(-1)  # the warm-up's rows are not counted
            shift = round_ % len(names)
            rps = {}
            for name in names[shift:] + names[:shift]:
                server = servers[name]
                url = f"http://127.0.0.1:{server.port}/predict"
                cpu = tree_cpu_s(server.proc.pid)
                run = run_wrk(url, body, headers, connections=16, seconds=args.seconds, label=name)
                total = totals[name]
                total[0] += run.requests
                total[1] += run.seconds
                total[2] += tree_cpu_s(server.proc.pid) - cpu
                p99s[name].append(run.p99_ms)
                rps[name] = run.rps
                if run.non_2xx or run.socket_errors:
                    print(f"  {name}: non-2xx {run.non_2xx}, socket errors {run.socket_errors}")
            for name in names[1:]:
                ratios[name].append(rps[name] / rps[base])
            print(
                f"  round {round_ + 1}: "
                + ", ".join(f"{name} {rps[name]:,.0f}" for name in names)
                + f" req/s (load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
        count_logged()
    finally:
        for server in servers.values():
            server.stop()
    rate = {name: totals[name][0] / totals[name][1] for name in names}
    cpu_us = {name: totals[name][2] / max(totals[name][0], 1) * 1e6 for name in names}
    print(
        f"Against {base} ({rounds} rotating rounds of {args.seconds} s, 16 connections, one "
        f"row; {base} {rate[base]:,.0f} req/s, {cpu_us[base]:.0f} us server CPU/request, "
        f"median p99 {statistics.median(p99s[base]):.2f} ms):",
        flush=True,
    )
    for name in names[1:]:
        quartiles = statistics.quantiles(ratios[name], n=4) if len(ratios[name]) > 1 else [1] * 3
        print(
            f"  {name}: {rate[name]:,.0f} req/s, throughput against {base} "
            f"{(rate[name] / rate[base] - 1) * 100:+.1f}% (per-round median "
            f"{(statistics.median(ratios[name]) - 1) * 100:+.1f}%, quartiles "
            f"{(quartiles[0] - 1) * 100:+.1f}% to {(quartiles[2] - 1) * 100:+.1f}%); server CPU "
            f"{cpu_us[name]:.0f} us/request ({(cpu_us[name] / cpu_us[base] - 1) * 100:+.1f}%)"
            f"; median p99 {statistics.median(p99s[name]):.2f} ms; rows logged "
            f"{logged_rows[name] / max(totals[name][0], 1) * 100:.0f}% of requests",
            flush=True,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/export"))
    parser.add_argument("--train-dir", type=Path, default=Path("models/train"))
    parser.add_argument(
        "--preprocessor", type=Path, default=Path("models/preprocess/preprocessor.joblib")
    )
    parser.add_argument("--seconds", type=int, default=15, help="each measured wrk run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--soak-seconds", type=int, default=60)
    parser.add_argument("--starts", type=int, default=3, help="cold starts timed")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow peers")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="extra environment for our server (e.g. SERVING_WORKER_CLASS=gthread)",
    )
    parser.add_argument("--out", type=Path, default=Path(".bench/serve/results.json"))
    parser.add_argument(
        "--log-cost",
        type=int,
        metavar="ROUNDS",
        default=0,
        help="only measure the prediction log: ROUNDS rotating one-row runs with it off, on as "
        "shipped and on for every row",
    )
    parser.add_argument(
        "--loop-cost",
        type=int,
        metavar="ROUNDS",
        default=0,
        help="only compare the event loops (SERVING_LOOP asyncio, uvloop): ROUNDS rotating runs",
    )
    args = parser.parse_args(argv)

    if shutil.which("wrk") is None:
        print("bench-serve: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    model_dir = args.model_dir.resolve()
    if not (model_dir / "model.json").is_file():
        print(f"bench-serve: no {model_dir}/model.json; run the pipeline first", file=sys.stderr)
        return 1
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    golden = json.loads((model_dir / "golden.json").read_text())
    descriptor = json.loads((model_dir / "model.json").read_text())
    known = {i["name"]: set(i.get("categories") or ()) for i in descriptor["inputs"]}
    complete = [
        r["inputs"]
        for r in golden["rows"]
        if all(v is not None for v in r["inputs"].values())
        and all(not cats or r["inputs"][c] in cats for c, cats in known.items())
    ]
    one = {"dataframe_records": complete[:1]}
    hundred = {"dataframe_records": (complete * 100)[:100]}
    bodies = {"1 row": json.dumps(one), "100 rows": json.dumps(hundred)}

    report = Report(
        machine={
            "cpus": len(os.sched_getaffinity(0)),
            "load_at_start": os.getloadavg()[0],
            "python": sys.version.split()[0],
            "model": "{} ({}, {})".format(
                descriptor["name"], descriptor.get("estimator"), descriptor.get("family")
            ),
            "server_env": extra_env,
        }
    )
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    plain = {"Content-Type": "application/json"}
    print(
        f"bench-serve: {report.machine['model']}, {report.machine['cpus']} CPUs, "
        f"load {report.machine['load_at_start']:.2f}; scratch {work}",
        flush=True,
    )
    if args.log_cost or args.loop_cost:
        variants, rounds = (
            (LOG_VARIANTS, args.log_cost) if args.log_cost else (LOOP_VARIANTS, args.loop_cost)
        )
        try:
            return variant_cost(
                model_dir, work, extra_env, bodies["1 row"], auth, args, variants, rounds
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    try:
        # 1. time to ready
        from serving.server import usable_cpus

        workers = float(extra_env.get("SERVING_WORKERS") or usable_cpus())
        for _ in range(args.starts):
            server = start_ours(model_dir, work, extra_env)
            try:
                report.ready_first_s.append(server.wait("/health/ready", lambda s, b: s == 200))
                report.ready_all_s.append(
                    server.wait("/metrics", lambda s, b: ready_workers(s, b) >= workers)
                )
            finally:
                server.stop()
        print(
            f"  time to ready: first worker {statistics.median(report.ready_first_s):.2f} s, "
            f"all workers {statistics.median(report.ready_all_s):.2f} s (median of "
            f"{args.starts})",
            flush=True,
        )

        # 2. ours (prediction log on), the previous gunicorn stack, ours with the log off
        for name, stack, logged in (
            ("ours", "granian", True),
            ("gunicorn", "gunicorn", True),
            ("ours-nolog", "granian", False),
        ):
            server = start_ours(model_dir, work, extra_env, stack=stack, prediction_log=logged)
            try:
                server.wait("/metrics", lambda s, b: ready_workers(s, b) >= workers)
                bench_server(
                    report,
                    name,
                    f"http://127.0.0.1:{server.port}/predict",
                    auth,
                    bodies,
                    args.seconds,
                    args.warmup,
                )
                if name == "ours":
                    _, metrics = http(f"http://127.0.0.1:{server.port}/metrics")
                    report.log_rows = {
                        outcome: float(value)
                        for outcome, value in re.findall(
                            r'^serving_prediction_log_rows_total\{outcome="(\w+)"\} (\S+)$',
                            metrics,
                            re.M,
                        )
                    }
            finally:
                server.stop()

        # 2a. the calibration peer: how fast is this machine today?
        anchor = start_anchor(model_dir, work)
        try:
            anchor.wait("/predict", lambda s, b: s in (200, 405))
            for seconds, label in (
                (args.warmup, "warm-up"),
                (args.seconds, "anchor (bare Flask + gunicorn + onnxruntime), 1 row"),
            ):
                result = run_wrk(
                    f"http://127.0.0.1:{anchor.port}/predict",
                    bodies["1 row"],
                    plain,
                    connections=16,
                    seconds=seconds,
                    label=label,
                )
            report.runs.append(result)
            print(
                f"  {result.label}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms (ENVIRONMENT.md: 3,213 when the targets were set)",
                flush=True,
            )
        finally:
            anchor.stop()

        # 2b. hostile clients, SIGTERM and kill -9 against ours
        hostile(report, model_dir, work, extra_env, bodies, auth, workers, args.seconds)

        # 3. the MLflow peers: the same ONNX file, and the native model the pipeline logged
        if not args.no_mlflow:
            peers = [("mlflow-onnx", save_onnx_peer(model_dir, work, complete), bodies)]
            native = native_peer(model_dir, work)
            if native is None:
                report.notes.append("the pipeline's MLflow run is not in the store: no native peer")
            else:
                peers.append(
                    (
                        "mlflow-native",
                        native[0],
                        example_bodies(native[1], {"1 row": 1, "100 rows": 100}),
                    )
                )
            for name, path, peer_bodies in peers:
                peer = start_mlflow(path, work, name)
                try:
                    peer.wait("/ping", lambda s, b: s == 200)
                    bench_server(
                        report,
                        name,
                        f"http://127.0.0.1:{peer.port}/invocations",
                        plain,
                        peer_bodies,
                        args.seconds,
                        args.warmup,
                    )
                finally:
                    peer.stop()

        # 4. soak
        server = start_ours(model_dir, work, extra_env)
        try:
            server.wait("/health/ready", lambda s, b: s == 200)
            url = f"http://127.0.0.1:{server.port}/predict"
            run_wrk(url, bodies["1 row"], auth, connections=64, seconds=10, label="soak warm-up")
            report.rss_after_warmup_mb = tree_rss_mb(server.proc.pid)
            report.soak = run_wrk(
                url,
                bodies["1 row"],
                auth,
                connections=64,
                seconds=args.soak_seconds,
                label="ours, soak, 1 row",
            )
            report.rss_end_mb = tree_rss_mb(server.proc.pid)
            report.soak_recycles = server.log.read_text().count("Respawning worker")
            _, metrics = http(f"http://127.0.0.1:{server.port}/metrics")
            report.soak_5xx = sum(
                float(v)
                for v in re.findall(
                    r'^serving_requests_total\{[^}]*status="5\d\d"[^}]*\} (\S+)$', metrics, re.M
                )
            )
        finally:
            server.stop()
        s = report.soak
        print(
            f"  soak: {s.rps:,.0f} req/s at 64 connections for {s.seconds} s, "
            f"{s.socket_errors} socket errors, {s.non_2xx} non-2xx, {report.soak_5xx:.0f} 5xx; "
            f"RSS {report.rss_after_warmup_mb:.1f} -> {report.rss_end_mb:.1f} MiB",
            flush=True,
        )
    finally:
        report.machine["load_at_end"] = os.getloadavg()[0]
        shutil.rmtree(work, ignore_errors=True)

    failures = verdict(report)
    print()
    print(markdown(report, failures))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**asdict(report), "failures": failures}, indent=2) + "\n")
    return 1 if failures else 0


def verdict(report: Report) -> list[str]:
    failures = []
    ours = report.run("ours, 1 row")
    if ours.rps < TARGET_RPS:
        failures.append(f"one-row throughput {ours.rps:,.0f} req/s < {TARGET_RPS:,.0f}")
    if ours.p99_ms > TARGET_P99_MS:
        failures.append(f"one-row p99 {ours.p99_ms:.2f} ms > {TARGET_P99_MS} ms")
    hundred = report.run("ours, 100 rows")
    if hundred.rps < TARGET_RPS_100:
        failures.append(f"100-row throughput {hundred.rps:,.0f} req/s < {TARGET_RPS_100:,.0f}")
    for run in report.runs:
        if run.label.startswith("ours") and (run.non_2xx or run.socket_errors):
            failures.append(f"{run.label}: {run.non_2xx} non-2xx, {run.socket_errors} errors")
    old = report.run("gunicorn, 1 row")
    if old is not None and ours.rps < TARGET_RATIO_GUNICORN * old.rps:
        failures.append(f"{ours.rps / old.rps:.2f}x gunicorn, below {TARGET_RATIO_GUNICORN}x")
    peer = report.run("mlflow-onnx, 1 row")
    if peer is not None and ours.rps < TARGET_RATIO_MLFLOW * peer.rps:
        failures.append(f"{ours.rps / peer.rps:.1f}x mlflow-onnx, below {TARGET_RATIO_MLFLOW:.0f}x")
    slow = report.slow
    if slow is not None and (
        slow.non_2xx or slow.socket_errors or slow.p99_ms > TARGET_SLOW_P99_MS
    ):
        failures.append(
            f"with {SLOW_CONNECTIONS} slow clients: {slow.non_2xx} non-2xx, "
            f"{slow.socket_errors} errors, p99 {slow.p99_ms:.2f} ms"
        )
    lying = report.lying_length
    if lying and (lying["status"] not in ("408", "closed") or lying["seconds"] > 10):
        failures.append(f"lying Content-Length: {lying}")
    if report.sigterm and (report.sigterm["reset_lb"] or report.sigterm["reset_reconnecting"]):
        failures.append(
            f"SIGTERM: {report.sigterm['reset_lb']} load-balancer-style and "
            f"{report.sigterm['reset_reconnecting']} reconnecting requests reset"
        )
    if report.kill9 and report.kill9["reset"] > 1:
        failures.append(f"kill -9 of a worker: {report.kill9['reset']} requests failed")
    soak = report.soak
    if soak.non_2xx or soak.socket_errors or report.soak_5xx:
        failures.append(
            f"soak: {soak.socket_errors} socket errors, {soak.non_2xx} non-2xx, "
            f"{report.soak_5xx:.0f} 5xx"
        )
    growth = report.rss_end_mb / report.rss_after_warmup_mb - 1
    if abs(growth) > TARGET_RSS_GROWTH:
        failures.append(f"soak RSS changed by {growth:+.1%}")
    if statistics.median(report.ready_all_s) > TARGET_READY_S:
        failures.append(f"ready after {statistics.median(report.ready_all_s):.2f} s")
    return failures


def hostile(report, model_dir, work, extra_env, bodies, auth, workers, seconds) -> None:
    """Slow clients and a lying Content-Length, then SIGTERM and kill -9 under load."""
    from benchmarks.load import SlowClients, Tally, caller, run_callers

    server = start_ours(model_dir, work, extra_env)
    try:
        server.wait("/metrics", lambda s, b: ready_workers(s, b) >= workers)
        url = f"http://127.0.0.1:{server.port}/predict"
        quarter = SLOW_CONNECTIONS // 4
        slow = [
            SlowClients("127.0.0.1", server.port, quarter, mode, token).start()
            for mode in ("body", "headers")
            for token in (TOKEN, None)
        ]
        time.sleep(2)
        try:
            report.slow = run_wrk(
                url, bodies["1 row"], auth, connections=16, seconds=seconds,
                label=f"ours, 1 row, {SLOW_CONNECTIONS} slow clients open",
            )  # fmt: skip
            report.lying_length = lying_content_length(server.port, bodies["1 row"])
        finally:
            for clients in slow:
                clients.close()
        report.slow_answers = {
            "answers": dict(sum((c.answers for c in slow), start=Counter())),
            "closed": sum(c.closed for c in slow),
        }
        print(
            f"  {report.slow.label}: {report.slow.rps:,.0f} req/s, p99 {report.slow.p99_ms:.2f} ms,"
            f" non-2xx {report.slow.non_2xx}, errors {report.slow.socket_errors}; slow clients "
            f"got {report.slow_answers}; lying Content-Length: {report.lying_length}",
            flush=True,
        )

        # kill -9 of one worker under 16 connections
        body = bodies["1 row"].encode()
        headers = {k: v for k, v in auth.items()}
        tally, stop = Tally(), threading.Event()
        threads = run_callers(16, caller, "127.0.0.1", server.port, body, headers, stop, tally)
        time.sleep(2)
        (granian,) = _children(server.proc.pid)
        os.kill(_children(granian)[0], signal.SIGKILL)
        time.sleep(6)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        report.kill9 = {"ok": tally.ok, "reset": tally.reset, "other": dict(tally.status)}
        print(f"  kill -9 of a worker at 16 connections: {report.kill9}", flush=True)
        server.wait("/metrics", lambda s, b: ready_workers(s, b) >= workers)

        # SIGTERM under 16 connections: clients that leave when told Connection: close (a
        # load balancer), and clients that keep reconnecting until refused (wrk-like)
        lb, lb_stop = Tally(), threading.Event()
        threads = run_callers(
            8, caller, "127.0.0.1", server.port, body, headers, lb_stop, lb, stop_on_close=True
        )
        rude, rude_stop = Tally(), threading.Event()
        threads += run_callers(
            8, caller, "127.0.0.1", server.port, body, headers, rude_stop, rude, until_refused=True
        )
        time.sleep(2)
        os.kill(server.proc.pid, signal.SIGTERM)
        server.proc.wait(timeout=30)
        lb_stop.set()
        rude_stop.set()
        for thread in threads:
            thread.join(timeout=30)
        report.sigterm = {
            "ok_lb": lb.ok, "reset_lb": lb.reset, "ok_reconnecting": rude.ok,
            "reset_reconnecting": rude.reset, "exit": server.proc.returncode,
        }  # fmt: skip
        print(f"  SIGTERM at 16 connections: {report.sigterm}", flush=True)
    finally:
        server.stop()


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def lying_content_length(port: int, body: str) -> dict[str, Any]:
    """Promise 50 bytes more than sent; how long until the server answers, and with what."""
    data = body.encode()
    head = (
        "POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(data) + 50}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head + data)
        answer = sock.recv(4096)
    return {
        "status": answer[9:12].decode() or "closed",
        "seconds": round(time.monotonic() - started, 2),
        "json": b"application/json" in answer,
    }


def markdown(report: Report, failures: list[str]) -> str:
    ours = {r.label.split(", ", 1)[1]: r for r in report.runs if r.label.startswith("ours, ")}
    lines = [
        f"Model {report.machine['model']}; {report.machine['cpus']} CPUs; load average "
        f"{report.machine['load_at_start']:.2f} at start, {report.machine['load_at_end']:.2f} "
        "at end; wrk -t2, 16 connections, "
        f"{report.runs[0].seconds} s per row.",
        "",
        "| server | rows/request | requests/s | p50 ms | p99 ms | ours is x faster |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for run in report.runs:
        server, rows = run.label.split(", ", 1)
        ratio = "" if server == "ours" else f"{ours[rows].rps / run.rps:.1f}x"
        lines.append(
            f"| {server} | {rows.split()[0]} | {run.rps:,.0f} | {run.p50_ms:.2f} | "
            f"{run.p99_ms:.2f} | {ratio} |"
        )
    s = report.soak
    lines += [
        "",
        f"Soak, ours, 1 row, 64 connections, {s.seconds} s: {s.rps:,.0f} requests/s, "
        f"{s.requests:,} requests, {s.socket_errors} socket errors, {s.non_2xx} non-2xx, "
        f"{report.soak_5xx:.0f} 5xx, {report.soak_recycles} worker(s) respawned "
        "during warm-up and soak; RSS of launcher + granian + workers "
        f"{report.rss_after_warmup_mb:.1f} MiB "
        f"after warm-up, {report.rss_end_mb:.1f} MiB at the end "
        f"({report.rss_end_mb / report.rss_after_warmup_mb - 1:+.1%}).",
        "",
        "Time to ready from process start (median of "
        f"{len(report.ready_first_s)}): first worker "
        f"{statistics.median(report.ready_first_s):.2f} s, every worker "
        f"{statistics.median(report.ready_all_s):.2f} s.",
    ]
    if report.slow is not None:
        w = report.slow
        lines += [
            "",
            f"With {SLOW_CONNECTIONS} slow connections open (headers or body at 1 byte/s, half "
            f"with a token), normal clients at 16 connections: {w.rps:,.0f} requests/s, p99 "
            f"{w.p99_ms:.2f} ms, {w.non_2xx} non-2xx, {w.socket_errors} socket errors; the slow "
            f"clients were answered {report.slow_answers}. A lying Content-Length: "
            f"{report.lying_length}.",
        ]
    if report.sigterm:
        lines.append(
            f"SIGTERM at 16 connections: {report.sigterm}. kill -9 of a worker at 16 "
            f"connections: {report.kill9}."
        )
    if report.log_rows:
        lines.append(f"Prediction log rows in the `ours` runs: {report.log_rows}.")
    anchor = report.run("anchor (bare Flask + gunicorn + onnxruntime), 1 row")
    ours = report.run("ours, 1 row")
    if anchor is not None and ours is not None:
        lines.append(
            f"Calibration: the bare anchor app did {anchor.rps:,.0f} one-row requests/s in this "
            f"run (3,213 on the machine the targets were set on); ours, with auth, validation, "
            f"metrics and both logs, did {ours.rps / anchor.rps:.2f}x the anchor."
        )
    lines += [f"Note: {n}." for n in report.notes]
    lines.append("")
    lines.append("Targets: " + ("all met." if not failures else "MISSED: " + "; ".join(failures)))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
