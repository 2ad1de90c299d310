"""The Flask app factory: ``create_app(config=None)``.

The model loads here, once per process, never per request. Three blueprints: ``api``
(``/predict``, ``/metadata``, ``/openapi.json``), ``health`` (``/health/live``,
``/health/ready``) and ``ops`` (``/metrics``). A thin WSGI wrapper counts every response,
including Flask's own 404/405, into the shared metrics.

The hot path is deliberately plain: the body is read straight from ``wsgi.input`` and parsed
with orjson, validation and the ONNX feed come from the schema precomputed at load time, and
the response is serialised once with orjson.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import HTTPException

from model_spec.descriptor import comparability
from serving import metrics as m
from serving.auth import AFTER_RESPONSE, AUTHORIZED, auth_error
from serving.config import DRAIN_FILE, ServingConfig, host_name
from serving.feedback import parse_feedback
from serving.metrics import MetricsStore
from serving.model import LoadedModel, ModelError, ModelHolder, load_model
from serving.openapi import build_openapi
from serving.predlog import JsonLinesWriter, Prediction, PredictionLog, timestamp
from serving.registry import (
    CHALLENGER,
    CHALLENGER_PREFIX,
    CHAMPION,
    POINTER,
    RegistryWatcher,
    read_pointer,
    read_refusal,
)
from serving.rsgi import merge_slashes, request_id_from
from serving.schema import RequestError

log = logging.getLogger("serving")

JSON = "application/json"
#: Paths the metrics name; anything else is counted as ``other`` (bounded label values).
ENDPOINTS = (
    "/predict",
    "/feedback",
    "/metadata",
    "/openapi.json",
    "/health/live",
    "/health/ready",
    "/metrics",
)
#: The POST endpoints that need the token: the HTTP edge checks it before reading the body.
PROTECTED_POSTS = frozenset(("/predict", "/feedback"))
#: The routes that read a request body (POST): the edge reads no other request's body.
BODY_PATHS = PROTECTED_POSTS
#: How often a worker looks at the published model pointer (a stat call).
POINTER_CHECK_SECONDS = 1.0


@dataclass
class ServingState:
    """What the views share: settings, the model holder, the metrics slot."""

    config: ServingConfig
    holder: ModelHolder
    store: MetricsStore
    runtime_dir: Path
    expected_auth: bytes | None
    cache: dict[str, tuple[LoadedModel, bytes]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    watcher: RegistryWatcher | None = None
    #: The challenger (``SERVING_ROLLOUT``); empty when the rollout is off.
    challenger: ModelHolder = field(default_factory=ModelHolder)
    challenger_watcher: RegistryWatcher | None = None
    prediction_log: PredictionLog | None = None
    feedback_log: JsonLinesWriter | None = None


def create_app(config: ServingConfig | dict[str, Any] | None = None) -> Flask:
    """Build the app. ``config`` is a :class:`ServingConfig`, or field overrides on top of
    the environment (``SERVING_*``), or ``None`` for the environment alone."""
    if not isinstance(config, ServingConfig):
        config = ServingConfig.from_env(**(config or {}))
    runtime_dir = config.runtime_dir or _private_runtime_dir()
    store = MetricsStore(runtime_dir / "metrics")
    token = config.api_token
    state = ServingState(
        config=config,
        holder=ModelHolder(),
        store=store,
        runtime_dir=runtime_dir,
        expected_auth=None if token is None else token.encode("utf-8"),
    )
    _open_logs(state)
    _start_model(state)

    app = _Flask(__name__, static_folder=None)  # no /static/<path> route: nothing to serve
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions["serving"] = state
    app.register_blueprint(_api_blueprint(state))
    app.register_blueprint(_health_blueprint(state))
    app.register_blueprint(_ops_blueprint(state))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    if config.allowed_hosts:  # inside the metrics wrapper, so refusals are counted
        app.wsgi_app = _HostAllowList(app.wsgi_app, config.allowed_hosts)  # type: ignore[method-assign]
    app.wsgi_app = _Instrumented(app.wsgi_app, store)  # type: ignore[method-assign]
    return app


class _Flask(Flask):
    def make_default_options_response(self) -> Response:
        """``OPTIONS`` on a route: 204 with ``Allow`` and no body, not Flask's empty 200
        ``text/html``."""
        response = super().make_default_options_response()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response


# ---------------------------------------------------------------------- responses
def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status=status, headers=headers, content_type=JSON)


def _error(exc: RequestError, headers: dict[str, str] | None = None) -> Response:
    return _json(exc.body(), exc.status, headers)


def _http_error(exc: HTTPException) -> Response:
    response = exc.get_response()
    status = exc.code or 500
    rule = (exc.name or "error").lower().replace(" ", "_")
    response.set_data(
        orjson.dumps({"error": {"status": status, "rule": rule, "message": exc.description}})
    )
    response.content_type = JSON
    return response


def _internal_error(exc: Exception) -> Response:
    log.exception("unhandled error")
    return _json(
        {
            "error": {
                "status": 500,
                "rule": "internal",
                "message": "internal error; the server log has the details",
            }
        },
        500,
    )


# ---------------------------------------------------------------------- blueprints
def _api_blueprint(state: ServingState) -> Blueprint:
    api = Blueprint("api", __name__)
    holder, store = state.holder, state.store
    limit = state.config.max_body_bytes
    expected = state.expected_auth
    predictions_log, feedback_log = state.prediction_log, state.feedback_log
    challenger, rollout = state.challenger, state.config.rollout
    key_header = "HTTP_" + state.config.rollout_key_header.upper().replace("-", "_")
    canary_cut = state.config.canary_percent * 100  # buckets are 0..9999

    def check_auth(environ: dict[str, Any]) -> Response | None:
        if expected is None or environ.get(AUTHORIZED):  # no token, or the edge checked it
            return None
        refused = auth_error(environ.get("HTTP_AUTHORIZATION"), expected)
        if refused is None:
            return None
        message, challenge = refused
        return _error(
            RequestError(401, "auth", message, "Authorization"), {"WWW-Authenticate": challenge}
        )

    def read_body(environ: dict[str, Any]) -> Any:
        content_type = environ.get("CONTENT_TYPE", "")
        if content_type != JSON and content_type.split(";", 1)[0].strip().lower() != JSON:
            raise RequestError(415, "content_type", f"Content-Type must be {JSON}", "Content-Type")
        coding = environ.get("HTTP_CONTENT_ENCODING")
        if coding is not None and coding.strip().lower() != "identity":
            raise RequestError(
                415,
                "content_encoding",
                "Content-Encoding must be identity: send the JSON uncompressed",
                "Content-Encoding",
            )
        length = environ.get("CONTENT_LENGTH")
        stream = environ["wsgi.input"]
        if length:
            try:
                size = int(length)
                if size < 0:
                    raise ValueError(length)
            except ValueError:
                raise RequestError(
                    400, "content_length", "invalid Content-Length", "Content-Length"
                ) from None
            if size > limit:
                raise RequestError(
                    413, "max_body_bytes", f"the body is {size} bytes; the limit is {limit}"
                )
            raw = stream.read(size) if size else b""
        else:  # chunked: read at most one byte past the limit
            raw = stream.read(limit + 1)
            if len(raw) > limit:
                raise RequestError(413, "max_body_bytes", f"the body exceeds {limit} bytes")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _parse_lenient(raw, exc)

    @api.post("/predict")
    def predict() -> Response:
        environ = request.environ
        denied = check_auth(environ)
        if denied is not None:
            return denied
        model = holder.model
        if model is None:
            return _not_ready(holder)
        request_id = environ["serving.request_id"]
        variant, shadow, champion = CHAMPION, None, model
        if rollout != "off":
            candidate = challenger.model
            if candidate is not None:
                if rollout == "shadow":
                    shadow = candidate
                elif canary_bucket(environ.get(key_header) or request_id) < canary_cut:
                    model, variant = candidate, CHALLENGER
        try:
            body = read_body(environ)
            read = time.perf_counter()
            # The API is the champion's (its OpenAPI document): every request is checked by its
            # rules, whichever variant answers, so a challenger with wider rules never takes
            # what the champion refuses.
            n, feed = champion.schema.feed_from_body(body)
        except RequestError as exc:
            return _error(exc)
        if variant == CHALLENGER:
            try:
                n, feed = model.schema.feed_from_body(body)
            except RequestError:
                # The challenger's narrower rules (a range, a category) refuse what the
                # champion takes: the champion answers, and the fallback is counted.
                store.inc(store.index(m.CANARY_FALLBACKS))
                model, variant = champion, CHAMPION
        try:
            predictions, outputs = _score(store, model, feed)
        except RequestError as exc:  # outputs that are not numbers (an overflowed input)
            return _error(exc)
        # A shadow challenger logs as many rows again: both count against the rate limit.
        logged = predictions_log is not None and predictions_log.wants(2 * n if shadow else n)
        if logged:
            predictions_log.submit(
                Prediction(
                    epoch=time.time(),
                    request_id=request_id,
                    model=model.model_block,
                    variant=variant,
                    served=True,
                    columns=model.log_columns,
                    feed=feed,
                    outputs=outputs,
                    latency_ms=(time.perf_counter() - environ["serving.started"]) * 1000,
                )
            )
        payload = {
            "predictions": predictions,
            "model": model.model_block,
            "variant": variant,
            "request_id": request_id,
        }
        response = Response(orjson.dumps(payload), content_type=JSON)
        if shadow is not None:  # scored once the answer is sent; never part of it
            shared = read - environ["serving.started"]  # reading the body: both variants'
            job = partial(
                _shadow, store, shadow, body, request_id, predictions_log if logged else None,
                shared,
            )  # fmt: skip
            after = environ.get(AFTER_RESPONSE)
            if after is not None:  # the edge runs it after handing the response over
                after.append(job)
            else:  # another WSGI server: when it closes the response
                response.call_on_close(job)
        return response

    @api.post("/feedback")
    def feedback() -> Response:
        environ = request.environ
        denied = check_auth(environ)
        if denied is not None:
            return denied
        if feedback_log is None:
            return _error(
                RequestError(
                    404, "feedback_off", "feedback is off: the server has no SERVING_FEEDBACK_LOG"
                )
            )
        try:
            items = parse_feedback(read_body(environ), holder.model)
        except RequestError as exc:
            return _error(exc)
        if feedback_log.room() < len(items):
            # All or nothing, and said: a 202 for rows the full queue then dropped told the
            # client its outcomes were kept.
            feedback_log.on_count("dropped", len(items))
            return _error(
                RequestError(
                    503,
                    "feedback_queue_full",
                    f"the feedback log's queue is full; none of the {len(items)} item(s) was "
                    "kept: send them again in a moment",
                ),
                {"Retry-After": "1"},
            )
        now = timestamp(time.time())
        for item in items:
            feedback_log.submit(orjson.dumps({"ts": now, **item}))
        return _json({"accepted": len(items)}, 202)

    @api.get("/metadata")
    def metadata() -> Response:
        denied = check_auth(request.environ)
        if denied is not None:
            return denied
        model = holder.model
        if model is None:
            return _not_ready(holder)
        return Response(_cached(state, "metadata", model, _metadata), content_type=JSON)

    @api.get("/openapi.json")
    def openapi() -> Response:
        model = holder.model
        body = _cached(state, "openapi", model, lambda mo: build_openapi(mo, state.config))
        return Response(body, content_type=JSON)

    return api


def canary_bucket(key: str) -> int:
    """The key's bucket, 0 to 9999: the same in every worker and every restart (CRC-32), so a
    caller key or request id always gets the same variant."""
    return zlib.crc32(key.encode("utf-8", "replace")) % 10_000


def _score(store: MetricsStore, model: LoadedModel, feed) -> tuple[list[Any], list[Any]]:
    """The response's predictions and the log's outputs, counted into the variant's metrics."""
    outputs = model.outputs(feed)
    if model.task.is_regression:
        values = [o["value"] for o in outputs]
        store.observe_values(model.value_index, values)
        return values, outputs
    store.count_classes(model.class_index, [o["label"] for o in outputs])
    return outputs, outputs


#: How often a worker says that the shadow challenger failed (it may fail on every request).
SHADOW_WARNING_SECONDS = 60.0
_shadow_warned = [-math.inf]


def _shadow(
    store, model: LoadedModel, body: Any, request_id: str, predictions_log, shared: float = 0.0
) -> None:
    """The challenger scores the same rows; the result goes to the log, never to the client.
    Its ``latency_ms`` is ``shared`` (the request's start to its body read, which the champion's
    latency also holds) plus its own validation and scoring: the same span as the champion's."""
    started = time.perf_counter() - shared
    try:
        _, feed = model.schema.feed_from_body(body)
        _, outputs = _score(store, model, feed)
    except Exception as exc:  # a challenger that cannot take this request: count, go on
        store.inc(store.index(m.SHADOW_FAILURES))
        now = time.monotonic()
        if now - _shadow_warned[0] >= SHADOW_WARNING_SECONDS:  # the metric counts every one
            _shadow_warned[0] = now
            log.warning(
                "shadow challenger failed on request %s: %s (serving_shadow_failures_total "
                "counts each; this is said at most every %g s)",
                request_id, exc, SHADOW_WARNING_SECONDS,
            )  # fmt: skip
        return
    if predictions_log is not None:
        predictions_log.submit(
            Prediction(
                epoch=time.time(),
                request_id=request_id,
                model=model.model_block,
                variant=CHALLENGER,
                served=False,
                columns=model.log_columns,
                feed=feed,
                outputs=outputs,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        )


def _health_blueprint(state: ServingState) -> Blueprint:
    health = Blueprint("health", __name__, url_prefix="/health")
    holder = state.holder

    @health.get("/live")
    def live() -> Response:
        return _json({"status": "alive"})

    drain_file = state.runtime_dir / DRAIN_FILE

    @health.get("/ready")
    def ready() -> Response:
        if drain_file.exists():
            return _json({"status": "not ready", "reason": "shutting down"}, 503)
        model = holder.model
        if model is None:
            return _json({"status": "not ready", "reason": public_reason(holder.error)}, 503)
        payload = {"status": "ready", "model": model.model_block, "golden_rows": model.golden_rows}
        if state.config.rollout != "off":  # the rollout's second model: whether it serves
            other = state.challenger.model
            payload["challenger"] = (
                {"status": "serving", "model": other.model_block}
                if other is not None
                else {"status": "not serving", "reason": _challenger_reason(state.challenger.error)}
            )
        return _json(payload)

    return health


def _ops_blueprint(state: ServingState) -> Blueprint:
    ops = Blueprint("ops", __name__)

    @ops.get("/metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(m.render(state.store), content_type=CONTENT_TYPE_LATEST)

    return ops


def _not_ready(holder: ModelHolder) -> Response:
    return _json(
        {
            "error": {
                "status": 503,
                "rule": "model_not_loaded",
                "message": f"no model is loaded: {public_reason(holder.error)}",
            }
        },
        503,
    )


_PATH = re.compile(r"(?<![\w:./])(?:[\\/][^\s'\"\\/:,;()]+)+[\\/]?")


def public_reason(message: str | None) -> str:
    """``message`` without server file paths: each path becomes its last component, so
    unauthenticated probes learn what is wrong (``model.json``) but not where it lives."""
    if not message:
        return "no model loaded yet"
    # A quoted path (every path a model error names is quoted), relative ones included and
    # whatever characters it holds, then any bare absolute path left.
    message = _QUOTED_PATH.sub(lambda m: f"'{_last_component_of(m.group(1))}'", message)
    return _PATH.sub(_last_component, message)


def _challenger_reason(message: str | None) -> str:
    """Why the challenger is not served, for clients without a token: which versions, not
    what differs (its inputs and classes are the challenger's descriptor; the log has them)."""
    head, sep, _ = (message or "").partition(": ")
    if sep and head.startswith("challenger ") and " cannot serve beside champion " in head:
        return (
            f"{head}: not the champion's kind of model (task, inputs or classes differ; the "
            "server log says which)"
        )
    return public_reason(message)


_QUOTED_PATH = re.compile(r"'([^'\n]*[\\/][^'\n]*)'")


def _last_component_of(path: str) -> str:
    return path.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


def _last_component(match: re.Match) -> str:
    return match.group(0).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


def _cached(state: ServingState, key: str, model: LoadedModel | None, build) -> bytes:
    hit = state.cache.get(key)
    if hit is not None and hit[0] is model:
        return hit[1]
    body = orjson.dumps(build(model))
    state.cache[key] = (model, body)  # type: ignore[assignment]
    return body


def _metadata(model: LoadedModel) -> dict[str, Any]:
    d = model.descriptor.to_dict()
    return {
        "name": model.name,
        "version": model.version,
        "source": model.source,
        "task": d["task"],
        "inputs": d["inputs"],
        "classes": list(model.classes),
        "target": d["target"],
        "estimator": d["estimator"],
        "family": d["family"],
        "onnx": d["onnx"],
        "metrics": d["metrics"],
        "parity": d["parity"],
        "lineage": d["lineage"],
        "golden_rows": model.golden_rows,
        "load_seconds": round(model.load_seconds, 4),
    }


def _parse_int(text: str) -> int | float:
    return int(text) if len(text) <= 18 else float(text)


def _parse_lenient(raw: bytes, error: orjson.JSONDecodeError) -> Any:
    """Second chance for bodies orjson refuses: Python's json reads ``NaN``/``Infinity`` and
    overflowing numbers, so validation can name the field that holds them (422, not 400)."""
    try:
        # JSON is UTF-8 (RFC 8259; a BOM is ignored). Bytes would let json guess UTF-16/32.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RequestError(
            400, "json", "the body is not valid JSON: it is not UTF-8 text"
        ) from None
    try:
        # An integer too long for a float64 becomes inf, so validation names its field.
        body = json.loads(text, parse_int=_parse_int)
        orjson.dumps(body)  # refuses lone surrogates and the like, which ONNX could not take
    except (ValueError, TypeError, RecursionError, orjson.JSONEncodeError):
        raise RequestError(
            400,
            "json",
            f"the body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
        ) from None
    return body


# ---------------------------------------------------------------------- metrics wrapper
class _HostAllowList:
    """Refuse requests whose ``Host`` is not listed (``SERVING_ALLOWED_HOSTS``): a page on
    another site that rebinds its DNS name to this server cannot read it. A ``Host`` that is
    not a host name with an optional port gets 400 (RFC 9112 section 3.2). Counted like any
    response (the metrics wrapper is outside it)."""

    def __init__(self, app, hosts: tuple[str, ...]):
        self.app = app
        self.hosts = frozenset(name for name in map(host_name, hosts) if name)
        self.refusals = {
            status: orjson.dumps(
                {"error": {"status": status, "rule": "host", "field": "Host", "message": text}}
            )
            for status, text in (
                (421, "this server does not answer for that host name"),
                (400, "the Host header is not a host name with an optional port"),
            )
        }

    def __call__(self, environ, start_response):
        name = host_name(environ.get("HTTP_HOST", ""))
        if name in self.hosts:
            return self.app(environ, start_response)
        status = 400 if name is None else 421
        body = self.refusals[status]
        start_response(
            "400 Bad Request" if status == 400 else "421 Misdirected Request",
            [("Content-Type", JSON), ("Content-Length", str(len(body)))],
        )
        return [body]


_ENDPOINT_LABELS = {path: path for path in ENDPOINTS}


def endpoint_label(path: str) -> str:
    """The ``endpoint`` label of a request for ``path``: its route as the router matches it
    (``//predict`` is ``/predict``: the router merges slashes), or ``other``; never the
    client's own text, so the metrics' labels stay a fixed set."""
    return _ENDPOINT_LABELS.get(merge_slashes(path), "other")


class _Instrumented:
    """WSGI wrapper: one counter increment and one histogram observation per response."""

    def __init__(self, app, store: MetricsStore):
        self.app = app
        self.store = store

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        environ.setdefault("serving.started", started)
        status: list[str] = []

        own_id = "serving.request_id" not in environ
        if own_id:  # not behind serving.rsgi (the test client, another WSGI server)
            environ["serving.request_id"] = request_id_from(environ.get("HTTP_X_REQUEST_ID"))

        def capture(code, headers, exc_info=None):
            status.append(code)
            if own_id:
                headers.append(("X-Request-ID", environ["serving.request_id"]))
            return start_response(code, headers, exc_info)

        result = self.app(environ, capture)
        self.store.observe_request(
            endpoint_label(environ.get("PATH_INFO", "")),
            int(status[0][:3]) if status else 500,
            time.perf_counter() - started,
        )
        return result


# ---------------------------------------------------------------------- logs
def _open_logs(state: ServingState) -> None:
    config, store = state.config, state.store

    def writer(path: Path, family: str, *extra_outcomes: str) -> JsonLinesWriter:
        indexes = {
            outcome: store.index(family, (("outcome", outcome),))
            for outcome in ("written", "dropped", "failed", *extra_outcomes)
        }
        return JsonLinesWriter(
            path,
            max_bytes=config.prediction_log_max_bytes,
            backups=config.prediction_log_backups,
            queue_size=config.prediction_log_queue,
            on_count=lambda outcome, n: store.inc(indexes[outcome], n),
        )

    if config.prediction_log is not None:
        # Only predictions are rate-limited; the limit counts into the writer's family.
        predictions = writer(config.prediction_log, m.PREDICTION_LOG, "rate_limited")
        state.prediction_log = PredictionLog(
            predictions,
            config.prediction_log_sample,
            config.prediction_log_rate_limit,
            on_count=predictions.on_count,
        )
    if config.feedback_log is not None:
        state.feedback_log = writer(config.feedback_log, m.FEEDBACK)


# ---------------------------------------------------------------------- model lifecycle
def _private_runtime_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="serving-runtime-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _holder(state: ServingState, variant: str) -> ModelHolder:
    return state.holder if variant == CHAMPION else state.challenger


class IncompatibleChallenger(ModelError):
    """A challenger that is not the champion's kind of model: another task, other inputs or
    other classes (:func:`model_spec.descriptor.comparability`). Canary would answer clients
    of the champion's API in another shape; shadow would fail on every request."""

    step = "compatible"


def _install(state: ServingState, model: LoadedModel, variant: str = CHAMPION) -> None:
    """Make ``model`` the one ``variant`` serves: metric series first, then one atomic swap.

    A challenger is served only beside a champion of its kind: installing one that is not
    raises :class:`IncompatibleChallenger`; a new champion that the current challenger does
    not match takes the challenger out of the rollout."""
    store = state.store
    if variant == CHALLENGER and state.holder.model is not None:
        why = _incompatible(model, state.holder.model)
        if why:
            raise IncompatibleChallenger(why)
    label = (("variant", variant),)
    if model.task.is_regression:
        model.value_index = store.index(
            m.PREDICTION_VALUE, label, width=m.histogram_width(m.PREDICTION_VALUE)
        )
    else:
        model.class_index = {
            c: store.index(m.PREDICTIONS, (("class", c), *label)) for c in model.classes
        }

    def info_of(mo: LoadedModel) -> int:
        labels = (("name", mo.name), ("version", mo.version), ("source", mo.source))
        return store.index(m.MODEL_INFO, labels + label)

    info = info_of(model)
    old = _holder(state, variant).swap(model)
    if old is not None:
        store.set(info_of(old), 0.0)
        store.inc(store.index(m.RELOADS, (("variant", variant),)))
        log.info(
            "%s %s version %s replaced version %s",
            variant,
            model.name,
            model.version,
            old.version,
        )
    store.set(info, 1.0)
    if variant == CHAMPION:
        store.set(store.index(m.READY), 1.0)
        challenger = state.challenger.model
        why = challenger is not None and _incompatible(challenger, model)
        if why:
            state.challenger.swap(None)
            store.set(info_of(challenger), 0.0)
            _failed(state, IncompatibleChallenger.step, why, startup=True, variant=CHALLENGER)


def _incompatible(challenger: LoadedModel, champion: LoadedModel) -> str | None:
    why = comparability(challenger.descriptor, champion.descriptor, role="challenger")
    if why is None:
        return None
    return (
        f"challenger {challenger.name} version {challenger.version} cannot serve beside "
        f"champion {champion.name} version {champion.version}: {why}"
    )


def _failed(
    state: ServingState, step: str, message: str, *, startup: bool, variant: str = CHAMPION
) -> None:
    state.store.inc(state.store.index(m.RELOAD_FAILURES, (("step", step), ("variant", variant))))
    holder = _holder(state, variant)
    if startup or holder.model is None:
        holder.error = message
    log.error(
        "%s model %s failed (%s); %s", variant, "load" if startup else "reload", step, message
    )


def _start_model(state: ServingState) -> None:
    config, store = state.config, state.store
    variants = (CHAMPION,) if config.rollout == "off" else (CHAMPION, CHALLENGER)
    for variant in variants:  # the series exist from the start, at 0
        for step in ("load", "golden"):
            store.index(m.RELOAD_FAILURES, (("step", step), ("variant", variant)))
        store.index(m.RELOADS, (("variant", variant),))
    store.set(store.index(m.READY), 0.0)
    _start_variant(state, CHAMPION, config.model_uri or config.model_dir)
    if config.rollout != "off":
        store.index(m.SHADOW_FAILURES if config.rollout == "shadow" else m.CANARY_FALLBACKS)
        _start_variant(state, CHALLENGER, config.challenger_source)


def _start_variant(state: ServingState, variant: str, source: str | Path) -> None:
    config = state.config
    holder = _holder(state, variant)
    if not (isinstance(source, str) and source.startswith("models:/")):
        try:
            _install(state, load_model(Path(source), config), variant)
        except ModelError as exc:
            _failed(state, exc.step, str(exc), startup=True, variant=variant)
        return
    if config.follow_published:  # the launcher (serving.server) does the registry work
        _follow_pointer(state, variant, source)
        return

    cache = config.model_cache_dir or state.runtime_dir / "models"

    def accept(version: str, path: Path) -> None:
        _install(state, load_model(path, config, version=version, source="registry"), variant)

    def on_failure(step: str, message: str) -> None:
        _failed(state, step, message, startup=holder.model is None, variant=variant)

    watcher = RegistryWatcher(source, cache, config.reload_interval, accept, on_failure)
    holder.error = f"waiting for {source}"
    watcher.poll_once()
    if variant == CHAMPION:
        state.watcher = watcher
    else:
        state.challenger_watcher = watcher
    watcher.start()


def _follow_pointer(state: ServingState, variant: str, uri: str) -> None:
    """Load the version the launcher published, then follow the pointer file as it moves."""
    config = state.config
    holder = _holder(state, variant)
    prefix = "" if variant == CHAMPION else CHALLENGER_PREFIX
    pointer_path = state.runtime_dir / (prefix + POINTER)
    refused: set[str] = set()
    holder.error = f"waiting for the first version of {uri}"

    def check() -> None:
        pointer = read_pointer(state.runtime_dir, prefix)
        model = holder.model
        if pointer is None and model is None:
            refusal = read_refusal(state.runtime_dir, prefix)
            if refusal is not None:  # the launcher could not get a servable first version
                holder.error = (
                    f"{refusal['uri']}: no servable version yet ({refusal['step']} failed): "
                    f"{refusal['message']}"
                )
        if pointer is None or pointer["version"] in refused:
            return
        if model is not None and pointer["version"] == model.version:
            return
        try:
            _install(
                state,
                load_model(
                    Path(pointer["path"]), config, version=pointer["version"], source="registry"
                ),
                variant,
            )
        except ModelError as exc:
            refused.add(pointer["version"])
            _failed(state, exc.step, str(exc), startup=model is None, variant=variant)

    seen = _stat_key(pointer_path)
    check()

    def follow() -> None:
        nonlocal seen
        while not state.stop.wait(POINTER_CHECK_SECONDS):
            key = _stat_key(pointer_path)
            if key != seen or holder.model is None:
                seen = key
                check()

    threading.Thread(target=follow, name=f"model-pointer-{variant}", daemon=True).start()


def _stat_key(path: Path) -> tuple[int, int] | None:
    with contextlib.suppress(OSError):
        st = os.stat(path)
        return st.st_mtime_ns, st.st_ino
    return None
