"""Serving configuration: one frozen dataclass, filled from the environment.

Every knob is an environment variable so the same code runs under the test client, under the
server (``python -m serving.server``) on a laptop and in the image. ``create_app(config)``
takes a :class:`ServingConfig` or a mapping of field overrides on top of the environment.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REJECT, ACCEPT = "reject", "accept"
#: A token an ``Authorization: Bearer`` header can carry: printable ASCII, no space at either end.
_HEADER_TOKEN = re.compile(r"[!-~]([ -~]*[!-~])?")
ROLLOUT_MODES = ("off", "shadow", "canary")
#: Set by ``serving.server`` when it publishes registry versions for the workers.
PUBLISHED_ENV = "SERVING_MODEL_PUBLISHED"
#: Written into the runtime dir by ``serving.server`` on SIGTERM: readiness turns 503.
DRAIN_FILE = "draining"

#: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``: what the registry mode takes.
REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


#: ``name``, ``name:port``, ``[v6]`` or ``[v6]:port`` (RFC 9110 section 7.2, RFC 3986 3.2.2).
_HOST = re.compile(
    r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?\.?))(?::[0-9]{1,5})?"
)


def host_name(host: str) -> str | None:
    """A ``Host`` value or an allow-list entry as the bare name they are compared by: lowercase,
    without the port, the brackets of an IPv6 address or the final dot of an absolute name;
    ``None`` when it is not a host (``localhost:abc``, ``[localhost]``, ``a b``)."""
    match = _HOST.fullmatch(host.strip().lower())
    if match is None:
        return None
    return match["v6"] or match["name"].removesuffix(".")


class ConfigError(ValueError):
    """A setting that cannot work; the message names the variable and what it accepts."""


@dataclass(frozen=True)
class ServingConfig:
    #: Exported model directory (``model.onnx``, ``model.json``, ``golden.json``).
    model_dir: Path | None = Path("models/export")
    #: ``models:/<name>@<alias>`` (or ``models:/<name>/<version>``); wins over ``model_dir``.
    model_uri: str | None = None
    #: Where registry versions are downloaded; a temporary directory when unset.
    model_cache_dir: Path | None = None
    #: Seconds between polls of the registry alias; 0 turns reloading off.
    reload_interval: float = 30.0
    #: The version reported for a directory model; the ONNX file's hash when unset.
    model_version: str | None = None
    #: Bearer token required by the API endpoints; auth is off when ``None``.
    api_token: str | None = dataclasses.field(default=None, repr=False)
    max_rows: int = 1000
    max_body_bytes: int = 1 << 20
    #: Seconds a client has to deliver the whole body once its headers are in (408 after).
    body_timeout: float = 5.0
    #: ``reject`` (422 naming the allowed values) or ``accept`` (the model one-hot encodes an
    #: unseen category as all zeros).
    unknown_categories: str = REJECT
    #: ``reject`` (422 naming the range) or ``accept`` numbers outside the descriptor's min/max.
    out_of_range: str = REJECT
    ort_intra_op_threads: int = 1
    ort_inter_op_threads: int = 1
    #: Host names (``Host`` header, port ignored) this server answers; any when empty.
    allowed_hosts: tuple[str, ...] = ()
    #: ``off``; ``shadow`` (the challenger also scores every request, logged, never returned);
    #: ``canary`` (``canary_percent`` of requests answered by the challenger, sticky by key).
    rollout: str = "off"
    canary_percent: float = 10.0
    #: The challenger: a registry URI (default: ``model_uri`` with ``@challenger``) or a dir.
    challenger_uri: str | None = None
    challenger_dir: Path | None = None
    #: Header whose value picks the canary bucket; the request id when absent.
    rollout_key_header: str = "X-Rollout-Key"
    #: JSON Lines file of served predictions (one line per row); off when unset.
    prediction_log: Path | None = None
    #: Fraction of requests whose rows are logged (drawn per request).
    prediction_log_sample: float = 1.0
    #: Rows a worker logs per second at most (a token bucket of one second's worth): every
    #: row below it, a sample above it; 0 for no limit.
    prediction_log_rate_limit: float = 100.0
    #: Size at which the prediction (and feedback) log is rotated, and how many old files stay.
    prediction_log_max_bytes: int = 100 << 20
    prediction_log_backups: int = 5
    #: Records a worker may hold for its log writer; more are dropped and counted.
    prediction_log_queue: int = 10_000
    #: JSON Lines file ``POST /feedback`` appends to; the endpoint is off when unset.
    feedback_log: Path | None = None
    #: Shared by the processes of one server: metrics slots and the published model pointer.
    #: ``serving.server`` creates one per server; a private temporary directory when unset.
    runtime_dir: Path | None = None
    #: True when another process (the launcher, ``serving.server``) resolves ``model_uri``
    #: and publishes each checked version to ``runtime_dir``; this process only follows it.
    follow_published: bool = False

    @property
    def challenger_source(self) -> str | Path | None:
        """Where the challenger comes from: a registry URI or a directory."""
        if self.challenger_dir is not None:
            return self.challenger_dir
        if self.challenger_uri:
            return self.challenger_uri
        if self.model_uri and "@" in self.model_uri:
            return self.model_uri.rsplit("@", 1)[0] + "@challenger"
        return None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServingConfig:
        """Read ``SERVING_*`` variables, then apply ``overrides`` (field names)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if "SERVING_MODEL_DIR" in env:
            values["model_dir"] = (
                Path(env["SERVING_MODEL_DIR"]) if env["SERVING_MODEL_DIR"] else None
            )
        values["model_uri"] = env.get("SERVING_MODEL_URI") or None
        if env.get("SERVING_MODEL_CACHE_DIR"):
            values["model_cache_dir"] = Path(env["SERVING_MODEL_CACHE_DIR"])
        values["model_version"] = env.get("SERVING_MODEL_VERSION") or None
        values["api_token"] = _read_token(env)
        for field, var, kind in (
            ("reload_interval", "SERVING_RELOAD_INTERVAL", float),
            ("body_timeout", "SERVING_BODY_TIMEOUT", float),
            ("prediction_log_sample", "SERVING_PREDICTION_LOG_SAMPLE", float),
            ("prediction_log_rate_limit", "SERVING_PREDICTION_LOG_RATE_LIMIT", float),
            ("canary_percent", "SERVING_CANARY_PERCENT", float),
            ("prediction_log_max_bytes", "SERVING_PREDICTION_LOG_MAX_BYTES", int),
            ("prediction_log_backups", "SERVING_PREDICTION_LOG_BACKUPS", int),
            ("prediction_log_queue", "SERVING_PREDICTION_LOG_QUEUE", int),
            ("max_rows", "SERVING_MAX_ROWS", int),
            ("max_body_bytes", "SERVING_MAX_BODY_BYTES", int),
            ("ort_intra_op_threads", "SERVING_ORT_INTRA_OP_THREADS", int),
            ("ort_inter_op_threads", "SERVING_ORT_INTER_OP_THREADS", int),
        ):
            if env.get(var):
                try:
                    values[field] = kind(env[var])
                except ValueError:
                    raise ConfigError(f"{var} must be a number, not {env[var]!r}.") from None
        for field, var in (
            ("unknown_categories", "SERVING_UNKNOWN_CATEGORIES"),
            ("out_of_range", "SERVING_OUT_OF_RANGE"),
        ):
            if env.get(var):
                values[field] = env[var].strip().lower()
        if env.get("SERVING_ALLOWED_HOSTS"):
            values["allowed_hosts"] = tuple(
                h.strip() for h in env["SERVING_ALLOWED_HOSTS"].split(",") if h.strip()
            )
        if env.get("SERVING_ROLLOUT"):
            values["rollout"] = env["SERVING_ROLLOUT"].strip().lower()
        if env.get("SERVING_ROLLOUT_KEY_HEADER"):
            values["rollout_key_header"] = env["SERVING_ROLLOUT_KEY_HEADER"].strip()
        values["challenger_uri"] = env.get("SERVING_CHALLENGER_URI") or None
        for field, var in (
            ("prediction_log", "SERVING_PREDICTION_LOG"),
            ("feedback_log", "SERVING_FEEDBACK_LOG"),
            ("challenger_dir", "SERVING_CHALLENGER_DIR"),
        ):
            if env.get(var):
                values[field] = Path(env[var])
        if env.get("SERVING_RUNTIME_DIR"):
            values["runtime_dir"] = Path(env["SERVING_RUNTIME_DIR"])
        values["follow_published"] = env.get(PUBLISHED_ENV) == "1"
        values.update(overrides)
        for key in (
            "model_dir",
            "model_cache_dir",
            "runtime_dir",
            "prediction_log",
            "feedback_log",
        ):
            if isinstance(values.get(key), str):
                values[key] = Path(values[key])
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Refuse settings that cannot work, naming the variable."""
        if self.model_uri is None and self.model_dir is None:
            raise ConfigError("set SERVING_MODEL_DIR or SERVING_MODEL_URI: there is no model.")
        for name, uri in (
            ("SERVING_MODEL_URI", self.model_uri),
            ("SERVING_CHALLENGER_URI", self.challenger_uri),
        ):
            if uri is not None and not REGISTRY_URI.match(uri):
                raise ConfigError(
                    f"{name} must look like models:/<name>@<alias> or models:/<name>/<version>, "
                    f"not {uri!r}."
                )
        for name, value in (
            ("SERVING_UNKNOWN_CATEGORIES", self.unknown_categories),
            ("SERVING_OUT_OF_RANGE", self.out_of_range),
        ):
            if value not in (REJECT, ACCEPT):
                raise ConfigError(f"{name} must be 'reject' or 'accept', not {value!r}.")
        for name, value in (
            ("SERVING_MAX_ROWS", self.max_rows),
            ("SERVING_MAX_BODY_BYTES", self.max_body_bytes),
            ("SERVING_ORT_INTRA_OP_THREADS", self.ort_intra_op_threads),
            ("SERVING_ORT_INTER_OP_THREADS", self.ort_inter_op_threads),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}.")
        if self.rollout not in ROLLOUT_MODES:
            raise ConfigError(
                f"SERVING_ROLLOUT must be one of {', '.join(ROLLOUT_MODES)}, not {self.rollout!r}."
            )
        if not 0.0 <= self.canary_percent <= 100.0:
            raise ConfigError(
                f"SERVING_CANARY_PERCENT must be from 0 to 100, not {self.canary_percent}."
            )
        if self.rollout != "off" and self.challenger_source is None:
            raise ConfigError(
                f"SERVING_ROLLOUT={self.rollout} needs a challenger: SERVING_CHALLENGER_URI, "
                "SERVING_CHALLENGER_DIR, or SERVING_MODEL_URI=models:/<name>@<alias> "
                "(then models:/<name>@challenger)."
            )
        if not 0.0 <= self.prediction_log_sample <= 1.0:
            raise ConfigError(
                "SERVING_PREDICTION_LOG_SAMPLE must be a fraction from 0 to 1, "
                f"not {self.prediction_log_sample}."
            )
        if not 0.0 <= self.prediction_log_rate_limit < float("inf"):
            raise ConfigError(
                "SERVING_PREDICTION_LOG_RATE_LIMIT must be rows per second per worker, 0 for "
                f"no limit, not {self.prediction_log_rate_limit}."
            )
        if self.prediction_log_max_bytes < 4096 or self.prediction_log_queue < 1:
            raise ConfigError(
                "SERVING_PREDICTION_LOG_MAX_BYTES must be at least 4096 and "
                "SERVING_PREDICTION_LOG_QUEUE at least 1."
            )
        if self.prediction_log_backups < 0:
            raise ConfigError("SERVING_PREDICTION_LOG_BACKUPS must be 0 or more.")
        if not self.body_timeout > 0:
            raise ConfigError("SERVING_BODY_TIMEOUT must be a number of seconds above 0.")
        if self.reload_interval < 0:
            raise ConfigError("SERVING_RELOAD_INTERVAL must be 0 (off) or a number of seconds.")
        if self.follow_published and self.runtime_dir is None:
            raise ConfigError(f"{PUBLISHED_ENV}=1 needs SERVING_RUNTIME_DIR (where it publishes).")
        for host in self.allowed_hosts:
            if host_name(host) is None:
                raise ConfigError(
                    f"SERVING_ALLOWED_HOSTS: {host!r} is not a host name or address (with an "
                    "optional port); list names separated by commas."
                )
        if self.api_token is not None and not self.api_token:
            raise ConfigError("the API token is empty: unset it to turn auth off.")
        if self.api_token is not None and not _HEADER_TOKEN.fullmatch(self.api_token):
            # granian hands on no header value that is not ASCII; the check strips spaces.
            raise ConfigError(
                "the API token must be printable ASCII without spaces at either end: a client "
                "could never send it in an Authorization header."
            )


def _read_token(env: Mapping[str, str]) -> str | None:
    token = env.get("SERVING_API_TOKEN")
    path = env.get("SERVING_API_TOKEN_FILE")
    if token and path:
        raise ConfigError("set SERVING_API_TOKEN or SERVING_API_TOKEN_FILE, not both.")
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"SERVING_API_TOKEN_FILE {path!r}: {exc.strerror}.") from None
        if not token:
            raise ConfigError(f"SERVING_API_TOKEN_FILE {path!r} is empty.")
    return token or None
