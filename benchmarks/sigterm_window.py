"""Where a request is lost when the server stops: clients that open a new connection for
every request keep doing so across SIGTERM, and each attempt is recorded as answered,
refused (the listener is closed: the client knows at once to go elsewhere) or reset (the
connection was accepted by the kernel but never answered).

    python -m benchmarks.sigterm_window --model-dir models/export --runs 5

Prints, per run, the counts, the time from the signal to the listener's close (the last
answered and the first refused connection), and the times of any resets. A diagnostic for
``make bench-serve``'s SIGTERM line (BENCHMARKS.md), not a test.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks.bench_serve import TOKEN, start_ours


def one_run(model_dir: Path, work: Path, body: bytes, clients: int, drain_s: float) -> dict:
    server = start_ours(
        model_dir, work, {"SERVING_DRAIN_SECONDS": str(drain_s), "SERVING_ACCESS_LOG": ""},
        prediction_log=False,
    )  # fmt: skip
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {TOKEN}",
        "Connection": "close",
    }
    events: list[tuple[float, str]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                conn.connect()
            except OSError:
                events.append((started, "refused"))
                time.sleep(0.002)
                continue
            try:
                conn.request("POST", "/predict", body, headers)
                response = conn.getresponse()
                response.read()
                events.append((started, f"status {response.status}"))
            except (OSError, http.client.HTTPException):
                events.append((started, "reset"))
            finally:
                conn.close()

    try:
        server.wait("/health/ready", lambda status, _: status == 200)
        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        signalled = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        server.proc.wait(timeout=30)
        exited = time.monotonic() - signalled
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    finally:
        server.stop()
    answered = [t - signalled for t, e in events if e.startswith("status")]
    refused = [t - signalled for t, e in events if e == "refused"]
    return {
        "counts": dict(Counter(e for _, e in events)),
        "last_answered_s": round(max(answered), 3),
        "first_refused_s": round(min(refused), 3) if refused else None,
        "exit_s": round(exited, 3),
        "resets_at_s": [round(t - signalled, 3) for t, e in events if e == "reset"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/export"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--drain-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    model_dir = args.model_dir.resolve()
    if not (model_dir / "golden.json").is_file():
        print(
            f"sigterm-window: no {model_dir}/golden.json; run the pipeline first", file=sys.stderr
        )
        return 1
    golden = json.loads((model_dir / "golden.json").read_text())
    row = next(r["inputs"] for r in golden["rows"] if "synthetic" not in r)
    body = json.dumps({"dataframe_records": [row]}).encode()
    total: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="sigterm-window-") as work:
        for n in range(args.runs):
            result = one_run(model_dir, Path(work), body, args.clients, args.drain_seconds)
            total.update(result["counts"])
            print(f"run {n + 1}: {json.dumps(result)}", flush=True)
    print(f"all runs: {dict(total)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
