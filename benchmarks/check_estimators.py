"""Every shipped estimator on every table it supports, as a user runs it: experiment, gate, serve.

In a temporary ``git clone`` of the committed project (its own DVC cache and MLflow store under
the clone, this checkout's ``.venv`` first on PATH as the Makefile's ``dvc`` target does), for
each table and each estimator of ``pipeline.estimators`` that supports the table's task:

1. ``dvc exp run -S train.estimator=<name>``: the whole pipeline, up to the gate;
2. ``reports/gate.json`` must say ``passed``;
3. ``make serve`` exactly as a user calls it (``SERVING_BIND`` on a free port of 127.0.0.1 and
   ``SERVING_API_TOKEN``), until ``/health/ready`` answers 200;
4. the golden rows of ``models/export/golden.json`` POSTed to ``/predict`` in one request must
   come back as golden.json says (labels equal and probabilities within its tolerance; for
   regression, values within tolerance x max(1, |expected|), the rule the server's own golden
   self-check uses); a golden row with an unseen category must get 422 ``category``; one golden
   row with a numeric feature set to a string must get 422 naming that feature;
5. the server is stopped (SIGTERM to its process group, as Ctrl-C would).

Tables: ``penguins`` (the default data, ``builtin:penguins``, multiclass) and ``diabetes``
(scikit-learn's bundled table, regression: written to ``data/diabetes.csv`` with a contract
drafted by ``python -m pipeline.stages.validate infer``, the README's way of bringing a table).

One row per pair is printed (Markdown); the exit status is 1 if any pair failed.

    python -m benchmarks.check_estimators [--tables penguins,diabetes] [--estimators a,b]
                                          [--keep DIR]
    make check-estimators [CHECK_ESTIMATORS_ARGS="--estimators ridge"]

Minutes per pair (a full DVC pipeline each); not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.ports import free_port

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent
#: The metric shown per task (from reports/metrics.json).
KEY_METRIC = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "r2"}
READY_DEADLINE_S = 180.0
STOP_DEADLINE_S = 30.0
COMMAND_TIMEOUT_S = 1800.0


class CheckFailure(Exception):
    """One pair failed; the message says at which step and why."""


@dataclass(frozen=True)
class Table:
    name: str
    task: str
    #: Prepares the clone for this table (writes data, contract, params); None: the default.
    setup: Callable[[Clone], None] | None = None


@dataclass
class Result:
    estimator: str
    table: str
    task: str
    gate: str = "-"
    metric: str = "-"
    predict: str = "-"
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# ---------------------------------------------------------------------------- helpers
def env_for(venv: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the clone's commands run in: ``venv``'s bin first on PATH, the clone's
    own embedded MLflow store (no MLFLOW_TRACKING_URI), quiet TensorFlow and GitPython."""
    env = dict(os.environ if base is None else base)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # The Makefile's level (3: TF's harmless E0000 notes hidden) unless the caller set one.
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["GIT_PYTHON_REFRESH"] = "quiet"
    return env


def supported_pairs(
    tables: Iterable[Table], estimators: dict[str, frozenset[str]], only: set[str] | None = None
) -> list[tuple[Table, str]]:
    """(table, estimator) for every estimator whose tasks include the table's task, in
    registry order; ``only`` narrows the estimators (an unknown name is an error)."""
    unknown = sorted((only or set()) - set(estimators))
    if unknown:
        raise SystemExit(f"unknown estimator(s) {unknown}; known: {sorted(estimators)}")
    return [
        (table, name)
        for table in tables
        for name, tasks in estimators.items()
        if table.task in tasks and (only is None or name in only)
    ]


def registry_tasks() -> dict[str, frozenset[str]]:
    from pipeline.estimators import ESTIMATORS

    return {name: frozenset(t.value for t in e.tasks) for name, e in ESTIMATORS.items()}


def golden_request(golden: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """The golden rows the server must answer (known categories), and those it must refuse
    (``synthetic: unseen_category``: the server's policy is a 422)."""
    rows = golden.get("rows") or []
    known = [r for r in rows if r.get("synthetic") != "unseen_category"]
    unseen = [r for r in rows if r.get("synthetic") == "unseen_category"]
    if not known:
        raise CheckFailure("golden.json has no row the server is meant to answer")
    return known, unseen


def compare_predictions(
    rows: list[dict], predictions: list[Any], classes: list[str], tolerance: float
) -> float:
    """Check the server's ``predictions`` against the golden ``rows``; returns the largest
    difference seen (probabilities: absolute; regression: relative to max(1, |expected|)).
    Raises :class:`CheckFailure` naming the first row that differs."""
    if len(predictions) != len(rows):
        raise CheckFailure(f"{len(predictions)} predictions for {len(rows)} golden rows")
    worst = 0.0
    for i, (row, got) in enumerate(zip(rows, predictions, strict=True)):
        if "prediction" in row:
            expected = float(row["prediction"])
            if not isinstance(got, int | float) or isinstance(got, bool):
                raise CheckFailure(f"golden row {i}: expected a number, got {got!r}")
            diff = abs(float(got) - expected) / max(1.0, abs(expected))
            if not diff <= tolerance:
                raise CheckFailure(
                    f"golden row {i}: prediction {got:.6g}, expected {expected:.6g} "
                    f"(relative difference {diff:.3g} > tolerance {tolerance:g})"
                )
        else:
            if got.get("label") != row["label"]:
                raise CheckFailure(
                    f"golden row {i}: label {got.get('label')!r}, expected {row['label']!r}"
                )
            probs = [float(got["probabilities"][c]) for c in classes]
            diff = max(abs(a - float(b)) for a, b in zip(probs, row["probabilities"], strict=True))
            if not diff <= tolerance:
                raise CheckFailure(
                    f"golden row {i}: probabilities differ by {diff:.3g} > tolerance {tolerance:g}"
                )
        worst = max(worst, diff)
    return worst


def bad_row(row: dict[str, Any], descriptor: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A copy of golden ``row`` with its first numeric feature set to a string, and the name
    of that feature (which the server's 422 must name)."""
    numeric = [i["name"] for i in descriptor["inputs"] if i["kind"] == "numeric"]
    if not numeric:
        raise CheckFailure("the model has no numeric input to send a bad value for")
    name = numeric[0]
    return {**row["inputs"], name: "not a number"}, name


def http(url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def server_log_tail(text: str, lines: int = 6) -> str:
    """The server log's last ``lines`` lines that are not access-log records (JSON lines):
    what the server said about itself (a model that failed its golden check, a bad setting)."""
    said = [line for line in text.strip().splitlines() if not line.startswith('{"time"')]
    return " | ".join(said[-lines:])


def format_table(results: list[Result]) -> list[str]:
    lines = [
        "| estimator | table | task | gate | key metric | /predict | seconds |",
        "|---|---|---|---|---|---|---:|",
    ]
    for r in results:
        predict = r.predict if r.ok else f"FAILED: {r.error}"
        lines.append(
            f"| {r.estimator} | {r.table} | {r.task} | {r.gate} | {r.metric} | {predict} "
            f"| {r.seconds:.0f} |"
        )
    return lines


# ---------------------------------------------------------------------------- the clone
class Clone:
    def __init__(self, root: Path, venv: Path):
        self.root, self.venv = root, venv
        self.env = env_for(venv)
        self.log = root.parent / "commands.log"

    def run(self, *args: str, check: bool = True, env: dict[str, str] | None = None):
        proc = subprocess.run(
            list(args),
            cwd=self.root,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        with self.log.open("a") as log:
            log.write(f"$ {' '.join(args)}  (exit {proc.returncode})\n{proc.stdout}{proc.stderr}\n")
        if check and proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-12:]
            raise CheckFailure(f"`{' '.join(args)}` exited {proc.returncode}: " + " | ".join(tail))
        return proc

    def python(self, *args: str, check: bool = True):
        return self.run(str(self.venv / "bin" / "python"), *args, check=check)

    def dvc(self, *args: str, check: bool = True):
        return self.run(str(self.venv / "bin" / "dvc"), *args, check=check)

    def read_json(self, rel: str) -> Any:
        return json.loads((self.root / rel).read_text())

    def set_params(self, **dotted: Any) -> None:
        path = self.root / "params.yaml"
        raw = yaml.safe_load(path.read_text())
        for key, value in dotted.items():
            node = raw
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
        path.write_text(yaml.safe_dump(raw, sort_keys=False))

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "--allow-empty", "-m", message)


def make_clone(dest: Path, venv: Path, repo: Path = REPO) -> Clone:
    """``git clone`` of ``repo``'s HEAD commit (what is committed, not the work tree)."""
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo), str(dest)], check=True)
    clone = Clone(dest, venv)
    clone.run("git", "checkout", "-q", "-B", "check-estimators", head)
    clone.run("git", "config", "user.email", "check@example.invalid")
    clone.run("git", "config", "user.name", "check-estimators")
    return clone


def setup_diabetes(clone: Clone) -> None:
    """scikit-learn's diabetes table as data/diabetes.csv, its contract drafted by the CLI."""
    from tests.bundled import diabetes

    diabetes().to_csv(clone.root / "data" / "diabetes.csv", index=False)
    clone.set_params(**{"data.source": "data/diabetes.csv"})
    clone.python(
        "-m", "pipeline.stages.validate", "infer", "--params", "params.yaml",
        "--target", "progression", "--out", "data/contract.yaml", "--force",
    )  # fmt: skip


TABLES = {
    "penguins": Table("penguins", "multiclass"),
    "diabetes": Table("diabetes", "regression", setup_diabetes),
}


# ---------------------------------------------------------------------------- one pair
class Server:
    """``make serve`` in the clone, in a process group of its own."""

    def __init__(self, clone: Clone):
        self.clone = clone
        self.port = free_port()
        self.token = secrets.token_urlsafe(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = clone.root.parent / f"serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(
            self.clone.env,
            SERVING_BIND=f"127.0.0.1:{self.port}",
            SERVING_API_TOKEN=self.token,
            SERVING_WORKERS="1",
        )
        # The clone's Makefile with this checkout's environment: VENV names it, and `-o env`
        # tells make that it is up to date (it is: the clone has the same uv.lock).
        command = ["make", "--no-print-directory", "-o", "env", "serve", f"VENV={self.clone.venv}"]
        with self.out.open("w") as log:
            self.proc = subprocess.Popen(
                command, cwd=self.clone.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def wait_ready(self) -> float:
        started = time.monotonic()
        last = "no answer"
        while time.monotonic() - started < READY_DEADLINE_S:
            if self.proc is not None and self.proc.poll() is not None:
                raise CheckFailure(f"`make serve` exited {self.proc.returncode}: {self.tail()}")
            try:
                status, body = http(self.url + "/health/ready")
                if status == 200:
                    return time.monotonic() - started
                last = f"{status} {body}"
            except OSError:
                pass
            time.sleep(0.5)
        raise CheckFailure(
            f"not ready within {READY_DEADLINE_S:.0f} s (last /health/ready: {last}); "
            f"server log: {self.tail()}"
        )

    def tail(self) -> str:
        text = self.out.read_text(errors="replace") if self.out.exists() else ""
        return server_log_tail(text)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise CheckFailure(f"the server did not stop within {STOP_DEADLINE_S:.0f} s") from None


def check_server(clone: Clone) -> str:
    export = clone.root / "models" / "export"
    golden = json.loads((export / "golden.json").read_text())
    descriptor = json.loads((export / "model.json").read_text())
    known, unseen = golden_request(golden)
    server = Server(clone)
    server.start()
    try:
        ready = server.wait_ready()
        status, answer = http(
            server.url + "/predict", {"instances": [r["inputs"] for r in known]}, server.token
        )
        if status != 200:
            raise CheckFailure(f"golden rows: /predict answered {status}: {answer}")
        worst = compare_predictions(
            known, answer["predictions"], descriptor.get("classes") or [], golden["tolerance"]
        )
        for row in unseen:
            status, answer = http(
                server.url + "/predict", {"instances": [row["inputs"]]}, server.token
            )
            if status != 422 or answer["error"]["rule"] != "category":
                raise CheckFailure(f"unseen-category golden row: {status} {answer}")
        inputs, field = bad_row(known[0], descriptor)
        status, answer = http(server.url + "/predict", {"instances": [inputs]}, server.token)
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        if status != 422 or field not in str(error.get("field", "")):
            raise CheckFailure(
                f"bad value for {field!r}: expected 422 naming it, got {status} {answer}"
            )
    finally:
        server.stop()
    refused = f", {len(unseen)} unseen 422" if unseen else ""
    return (
        f"{len(known)} golden ok (max diff {worst:.1g}, tol {golden['tolerance']:g}){refused}, "
        f"bad `{field}` 422; ready {ready:.0f} s"
    )


def check_pair(clone: Clone, table: Table, estimator: str) -> Result:
    result = Result(estimator, table.name, table.task)
    started = time.monotonic()
    try:
        proc = clone.dvc("exp", "run", "-S", f"train.estimator={estimator}", check=False)
        gate_path = clone.root / "reports" / "gate.json"
        gate = json.loads(gate_path.read_text()) if gate_path.exists() else {}
        trained = clone.read_json("models/train/trained.json")
        if trained.get("estimator") != estimator or trained.get("task") != table.task:
            raise CheckFailure(f"trained {trained}, expected {estimator} for {table.task}")
        metrics = clone.read_json("reports/metrics.json")
        key = KEY_METRIC[table.task]
        result.metric = f"{key} {metrics[key]:.3f}"
        result.gate = "passed" if gate.get("passed") is True else "FAILED"
        if proc.returncode != 0 or gate.get("passed") is not True:
            failed = [c["detail"] for c in gate.get("checks", []) if not c["passed"]]
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
            raise CheckFailure(f"exp run exited {proc.returncode}; gate: {failed or tail}")
        result.predict = check_server(clone)
    except (CheckFailure, OSError, KeyError, ValueError, subprocess.TimeoutExpired) as exc:
        result.error = str(exc) or type(exc).__name__
    result.seconds = time.monotonic() - started
    return result


def run(
    pairs: list[tuple[Table, str]], workdir: Path, venv: Path, report: Callable[[str], None]
) -> list[Result]:
    clone = make_clone(workdir / "repo", venv)
    head = clone.run("git", "rev-parse", "--short", "HEAD").stdout.strip()
    report(f"check-estimators: clone of {REPO} ({head}) at {clone.root}, log {clone.log}")
    results: list[Result] = []
    prepared: str | None = None
    for table, estimator in pairs:
        if prepared != table.name:
            if table.setup is not None:
                table.setup(clone)
                clone.commit(f"{table.name} table")
            prepared = table.name
        result = check_pair(clone, table, estimator)
        results.append(result)
        status = "ok" if result.ok else f"FAILED: {result.error}"
        report(f"check-estimators: {estimator} on {table.name}: {status} ({result.seconds:.0f} s)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join(TABLES), help="comma-separated")
    parser.add_argument("--estimators", default="", help="comma-separated (default: all)")
    parser.add_argument("--keep", type=Path, help="work here and keep the clone and logs")
    args = parser.parse_args(argv)
    unknown = [t for t in args.tables.split(",") if t not in TABLES]
    if unknown:
        parser.error(f"unknown table(s) {unknown}; known: {list(TABLES)}")
    only = {e for e in args.estimators.split(",") if e} or None
    pairs = supported_pairs([TABLES[t] for t in args.tables.split(",")], registry_tasks(), only)
    if not pairs:
        parser.error("no (table, estimator) pair: no chosen estimator supports a chosen table")

    def report(line: str) -> None:
        print(line, flush=True)

    started = time.monotonic()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
        results = run(pairs, args.keep.resolve(), VENV, report)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="check-estimators-"))
        results = run(pairs, tmp, VENV, report)
        if all(r.ok for r in results):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            report(f"check-estimators: kept {tmp} (commands.log, serve-*.log) for the failures")
    print()
    print("\n".join(format_table(results)))
    failed = [r for r in results if not r.ok]
    print(
        f"\ncheck-estimators: {len(results) - len(failed)}/{len(results)} pairs passed in "
        f"{time.monotonic() - started:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
