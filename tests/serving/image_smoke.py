"""Smoke test of the built serving image (what ``make image-test`` runs after ``make image``).

    python -m tests.serving.image_smoke --tool docker --image tabular-mlops-serving:latest \
        --model-dir models/export

Runs the image, waits for it to be ready, runs its HEALTHCHECK, checks that it runs as a
non-root user, sends the model's golden rows and a set of bad requests, reads /metrics, then
stops it. Works with ``docker`` and with ``../shared/tools/oci`` (buildah, host network).
Exits 1 with the first failure; the container log is printed on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from pipeline.ports import free_port


class SmokeFailure(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


class Container:
    """The few container verbs this test needs, for docker and for oci."""

    def __init__(self, tool: str, image: str):
        self.tool, self.image = tool, image
        self.is_oci = Path(tool).name == "oci"
        self.name = f"serving-smoke-{os.getpid()}-{secrets.token_hex(3)}"
        self.port = free_port()

    def _run(self, *args: str, check_rc: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.tool, *args], capture_output=True, text=True)
        if check_rc and proc.returncode != 0:
            raise SmokeFailure(f"{self.tool} {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def config(self) -> dict[str, Any]:
        data = json.loads(self._run("inspect", self.image).stdout)
        if isinstance(data, list):  # docker inspect
            data = data[0]["Config"]
        return data

    def start(self, env: dict[str, str]) -> None:
        env = {**env, "SERVING_BIND": f"0.0.0.0:{self.port}"}
        flags = [x for k, v in env.items() for x in ("-e", f"{k}={v}")]
        if self.is_oci:  # host network
            self._run("run", "--name", self.name, *flags, self.image)
        else:
            self._run(
                "run",
                "-d",
                "--name",
                self.name,
                "-p",
                f"127.0.0.1:{self.port}:{self.port}",
                *flags,
                self.image,
            )

    def healthcheck(self, test: list[str]) -> subprocess.CompletedProcess:
        if self.is_oci:
            return self._run("health", self.name, check_rc=False)
        cmd = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        return self._run("exec", self.name, *cmd, check_rc=False)

    def uids(self) -> set[int]:
        """Real user ids of the server's processes inside the container."""
        if not self.is_oci:  # every process in the container's PID namespace (no ps in slim)
            out = self._run(
                "exec",
                self.name,
                "sh",
                "-c",
                'for s in /proc/[0-9]*/status; do grep "^Uid:" "$s"; done',
            )
            return {int(line.split()[1]) for line in out.stdout.splitlines() if line.strip()}
        # oci: the container's processes share the process group recorded in its pid file.
        pgid = int(Path(f"/run/oci/{self.name}.pid").read_text())
        found = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if os.getpgid(int(proc.name)) != pgid:
                    continue
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                # the server's processes, not the `buildah run` (root) that started them
                if b"serving" not in b" ".join(argv) or argv[0].endswith(b"buildah"):
                    continue
                status = (proc / "status").read_text()
            except (OSError, ProcessLookupError):
                continue
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            found.add(int(uid_line.split()[1]))
        return found

    def logs(self) -> str:
        if self.is_oci:
            path = Path(f"/run/oci/{self.name}.log")
            return path.read_text() if path.exists() else "(no log)"
        return self._run("logs", self.name, check_rc=False).stdout

    def stop(self) -> None:
        self._run("stop", self.name, check_rc=False)
        if not self.is_oci:
            self._run("rm", "-f", self.name, check_rc=False)


def request(
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def request_early_answer(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST ``body`` on a raw socket and read the answer even if the server answers and closes
    before the body is all sent (as it does for a body over its limit: a 413 from the headers
    alone). urllib would only report the broken pipe."""
    parts = urllib.parse.urlsplit(url)
    head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()] + [f"Content-Length: {len(body)}", "", ""]
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=10) as sock:
        sock.sendall("\r\n".join(head).encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for i in range(0, len(body), 65536):
                sock.sendall(body[i : i + 65536])
        raw = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                raw += chunk
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    status = int(status_line.split()[1])
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode(errors="replace")


def wait_ready(url: str, container: Container, deadline_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        try:
            status, _ = request(url + "/health/ready")
            if status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.25)
    raise SmokeFailure(f"not ready within {deadline_s:.0f} s")


def smoke(container: Container, model_dir: Path, deadline_s: float) -> list[str]:
    done = []
    config = container.config()
    user = str(config.get("User") or "")
    check(
        user not in ("", "0", "root") and not user.startswith(("0:", "root:")),
        f"image runs as {user or 'root (no USER)'}; it must name a non-root user",
    )
    health = config.get("Healthcheck") or {}
    test = health.get("Test") or []
    check(bool(test) and test[0] != "NONE", "image has no HEALTHCHECK")
    done.append(f"image config: USER {user}, HEALTHCHECK {' '.join(test[1:])}")

    token = secrets.token_urlsafe(24)
    container.start({"SERVING_API_TOKEN": token})
    url = f"http://127.0.0.1:{container.port}"
    seconds = wait_ready(url, container, deadline_s)
    done.append(f"ready after {seconds:.1f} s (from `run`, including container start)")
    hc = container.healthcheck(test)
    check(hc.returncode == 0, f"HEALTHCHECK failed: {hc.stdout} {hc.stderr}")
    done.append("HEALTHCHECK passes")
    uids = container.uids()
    check(bool(uids) and 0 not in uids, f"server processes run as uids {sorted(uids)}")
    done.append(f"server processes run as uid(s) {sorted(uids)}")

    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    golden = json.loads((model_dir / "golden.json").read_text())
    descriptor = json.loads((model_dir / "model.json").read_text())
    known = {
        i["name"]: set(i.get("categories") or ())
        for i in descriptor["inputs"]
        if i["kind"] == "categorical"
    }

    def is_known(row: dict) -> bool:
        return all(row["inputs"][c] in (*cats, None) for c, cats in known.items() if cats)

    rows = [r for r in golden["rows"] if is_known(r)]
    unseen = [r for r in golden["rows"] if not is_known(r)]
    check(bool(rows), "golden.json has no row with known categories")
    for i, row in enumerate(rows):
        body = json.dumps({"instances": [row["inputs"]]}).encode()
        status, answer = request(url + "/predict", body, auth)
        check(status == 200, f"golden row {i}: status {status}: {answer}")
        (prediction,) = answer["predictions"]
        check(
            prediction["label"] == row["label"],
            f"golden row {i}: label {prediction['label']!r}, expected {row['label']!r}",
        )
        got = [prediction["probabilities"][c] for c in descriptor["classes"]]
        diff = max(abs(a - b) for a, b in zip(got, row["probabilities"], strict=True))
        check(diff <= golden["tolerance"], f"golden row {i}: probabilities differ by {diff:.2g}")
    status, answer = request(
        url + "/predict",
        json.dumps({"dataframe_records": [r["inputs"] for r in rows]}).encode(),
        auth,
    )
    check(
        status == 200 and [p["label"] for p in answer["predictions"]] == [r["label"] for r in rows],
        f"golden batch: {status}",
    )
    done.append(f"{len(rows)} golden rows reproduced (one by one and as one MLflow batch)")
    for row in unseen:
        status, answer = request(
            url + "/predict", json.dumps({"instances": [row["inputs"]]}).encode(), auth
        )
        check(
            status == 422 and answer["error"]["rule"] == "category",
            f"unseen-category golden row: {status} {answer}",
        )
    if unseen:
        done.append(f"{len(unseen)} unseen-category golden row(s) refused with 422 (the policy)")

    first = json.dumps({"instances": [rows[0]["inputs"]]}).encode()
    bad = [
        ("no token", first, {"Content-Type": "application/json"}, 401, "auth"),
        ("wrong token", first, {**auth, "Authorization": "Bearer nope"}, 401, "auth"),
        ("malformed JSON", b'{"instances": [', auth, 400, "json"),
        ("wrong content type", first, {**auth, "Content-Type": "text/plain"}, 415, "content_type"),
        ("empty batch", b'{"instances": []}', auth, 422, "min_rows"),
        (
            "unknown column",
            json.dumps({"instances": [{**rows[0]["inputs"], "nope": 1}]}).encode(),
            auth,
            422,
            "unknown_column",
        ),
        (
            "body too large",
            b'{"instances": [' + b" " * (2 << 20) + b"]}",
            auth,
            413,
            "max_body_bytes",
        ),
    ]
    for what, body, headers, want, rule in bad:
        send = request_early_answer if want == 413 else request
        status, answer = send(url + "/predict", body, headers)
        check(
            status == want and isinstance(answer, dict) and answer["error"]["rule"] == rule,
            f"{what}: expected {want} {rule}, got {status} {answer}",
        )
    done.append(f"{len(bad)} bad requests answered 401/400/415/422/413 with JSON errors")

    status, text = request(url + "/metrics")
    check(
        status == 200 and 'serving_requests_total{endpoint="/predict",status="200"}' in text,
        "/metrics lacks the predict counter",
    )
    status, meta = request(url + "/metadata", headers=auth)
    check(status == 200 and meta["name"] == descriptor["name"], f"/metadata: {status}")
    done.append(f"/metrics and /metadata answer (model {meta['name']} version {meta['version']})")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tool", default="docker")
    parser.add_argument("--image", required=True)
    parser.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        help="the model directory baked into the image (for golden.json)",
    )
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds to get ready")
    args = parser.parse_args(argv)

    container = Container(args.tool, args.image)
    try:
        for line in smoke(container, args.model_dir, args.deadline):
            print(f"image-test: ok: {line}")
    except SmokeFailure as exc:
        print(
            f"image-test: FAILED: {exc}\n--- container log ---\n{container.logs()[-4000:]}",
            file=sys.stderr,
        )
        return 1
    finally:
        container.stop()
    print(f"image-test: {args.image} passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
