"""The model registry: ``register``, ``promote`` and ``rollback``.

Not DVC stages: they change the MLflow registry, not files. ``python -m pipeline.registry
<command> --help``, or ``make register``, ``make promote [VERSION=n] [REASON=...]``,
``make rollback [REASON=...]``.

- **register** turns the gated export into a new version of ``registry.model_name`` and points
  the ``challenger`` alias at it. It refuses unless ``reports/gate.json`` passed *for this very
  export* (same run id and ONNX file hash). The version is the ONNX MLflow model the export stage
  logged to the pipeline run (``mlflow.onnx``, servable by ``mlflow models serve``); the whole
  export directory (``model.onnx``, ``model.json``, ``golden.json``, the model card and, for
  Keras, ``saved_model/``) is added under ``export/`` in that model's artifacts, so
  ``models:/<name>@champion`` downloads everything a server, a TF Serving image or the gate
  needs in one place. Tags record the lineage (see :func:`version_tags`). One version per
  pipeline run: registering the same run again is a no-op that names the existing version.
- **promote** moves ``champion`` to a version (default: the ``challenger``) whose recorded gate
  passed, tags it with who/when/why and records the event as one tag of the registered model,
  ``champion_history.<seq>`` (a short JSON object; see :func:`history_tag`). Promoting the
  current champion again does nothing.
- **rollback** moves ``champion`` back to the champion before it, from that history.
- **serve-source** (used by ``make serve``) prints the server settings: ``models/export`` when
  it holds an export, else the registry's ``@champion`` (see :func:`serving_source`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_spec.descriptor import DESCRIPTOR_FILE, GOLDEN_FILE, DescriptorError, ModelDescriptor
from model_spec.task import Task
from pipeline.config import Params, flatten, load_params
from pipeline.errors import PipelineError, cli
from pipeline.io import file_sha256, read_json
from pipeline.servable import require_servable

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Each promote/rollback event is one registered-model tag ``champion_history.<seq>``; the old
#: single tag of that name (a JSON list, before per-event tags) is still read as the oldest events.
HISTORY_TAG = "champion_history"
#: Where the export directory goes inside a registered version's artifacts.
EXPORT_ARTIFACT_DIR = "export"
RUN_ID_TAG = "pipeline_run_id"
#: The run tag with which the export stage names the ONNX model it logged.
EXPORT_MODEL_URI_TAG = "export.onnx_model_uri"
#: A tag value must fit MLflow's SQL column (varchar(5000), enforced by PostgreSQL and MySQL):
#: a free-text reason is cut so that one event's JSON stays far below it.
MAX_REASON_CHARS = 1000
#: Zero-padded sequence numbers sort in the UI in the order the events happened.
_SEQ_DIGITS = 6
#: ``registry.model_name: auto`` names the model after the data (see :func:`model_name`).
AUTO_NAME = "auto"


def model_name(params: Params, task: Task | None = None) -> str:
    """The registered model's name: ``registry.model_name``, or for ``auto`` a name that
    follows the data, ``<data name>-<classifier|regressor>`` (:func:`default_model_name`), so
    a new table never lands in another table's registered model. ``task`` saves reading the
    contract when the caller knows it."""
    name = params.registry.model_name
    if name != AUTO_NAME:
        return name
    if task is None:
        from pipeline.contract import load_contract

        task = load_contract(params.data.contract).task
    return default_model_name(params.data.source, task)


def default_model_name(source: str, task: Task) -> str:
    """``builtin:penguins`` -> ``penguins-classifier``; ``data/My Table.csv`` (numeric target)
    -> ``my-table-regressor``: the file's stem, accents dropped, lower case, runs of
    characters outside ``[a-z0-9_]`` as one ``-``."""
    if source.startswith("builtin:"):
        stem = source.removeprefix("builtin:")
    else:
        last = re.split(r"[/\\]", source.split("?", 1)[0].rstrip("/"))[-1]
        stem = last.split(".", 1)[0] if "." in last else last
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^a-z0-9_]+", "-", ascii_stem.lower()).strip("-") or "model"
    return f"{stem}-{'regressor' if task.is_regression else 'classifier'}"


def _client():
    import mlflow

    from pipeline.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.MlflowClient()


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def actor() -> str:
    """Who is acting: the CI user when there is one (GitHub Actions, Jenkins), else the login."""
    for var in ("GITHUB_ACTOR", "BUILD_USER_ID", "GITLAB_USER_LOGIN", "USER", "LOGNAME"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- lookups
def require_model(client, name: str):
    """The registered model, or a PipelineError naming the models that do exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
    known = sorted(m.name for m in client.search_registered_models(max_results=50))
    shown = ", ".join(f"'{n}'" for n in known) if known else "none yet"
    raise PipelineError(
        f"registered model '{name}' does not exist in the MLflow store (registered models: "
        f"{shown}). Register a gated export first with `make register`, or check "
        "registry.model_name in params.yaml and MLFLOW_TRACKING_URI."
    )


def _versions(client, name: str) -> list[str]:
    found = client.search_model_versions(f"name = '{name}'")
    return sorted((str(v.version) for v in found), key=int)


def require_version(client, name: str, version: str | int):
    """A version of the model, or a PipelineError listing the versions there are."""
    from mlflow.exceptions import MlflowException

    require_model(client, name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if not _not_found(exc) and "INVALID_PARAMETER_VALUE" not in str(exc.error_code):
            raise
    shown = ", ".join(_versions(client, name)) or "none"
    raise PipelineError(f"model '{name}' has no version '{version}' (versions: {shown}).")


def alias_version(client, name: str, alias: str):
    """The version an alias points to, or None when the model has no such alias."""
    model = require_model(client, name)
    version = (model.aliases or {}).get(alias)
    return None if version is None else client.get_model_version(name, str(version))


def require_alias(client, name: str, alias: str, hint: str = ""):
    found = alias_version(client, name, alias)
    if found is None:
        model = require_model(client, name)
        aliases = ", ".join(f"@{a} -> v{v}" for a, v in sorted((model.aliases or {}).items()))
        raise PipelineError(
            f"model '{name}' has no '@{alias}' alias (aliases: {aliases or 'none'}).{hint}"
        )
    return found


def champion_of(name: str) -> tuple[Any | None, str]:
    """The ``@champion`` version of ``name`` (None if there is none) and a sentence saying so."""
    client = _client()
    try:
        version = alias_version(client, name, CHAMPION)
    except PipelineError:
        return None, f"Registered model '{name}' does not exist yet, so there is no champion."
    if version is None:
        return None, f"Registered model '{name}' has no '@{CHAMPION}' alias yet."
    return version, ""


# ---------------------------------------------------------------------------- history
def history_tag(seq: int) -> str:
    """The registered-model tag key of the ``seq``-th event: ``champion_history.000042``."""
    return f"{HISTORY_TAG}.{seq:0{_SEQ_DIGITS}d}"


def _history_seq(key: str) -> int | None:
    prefix, _, number = key.partition(".")
    return int(number) if prefix == HISTORY_TAG and number.isdigit() else None


def load_history(model) -> list[dict[str, Any]]:
    """The promote/rollback events recorded on ``model``, oldest first."""
    tags = model.tags or {}
    legacy = tags.get(HISTORY_TAG)
    events: list[dict[str, Any]] = json.loads(legacy) if legacy else []
    numbered = sorted((seq, key) for key in tags if (seq := _history_seq(key)) is not None)
    events.extend(json.loads(tags[key]) for _, key in numbered)
    return events


def champion_stack(events: list[dict[str, Any]]) -> list[str]:
    """Replay promote/rollback events into the stack of champions, current one last.

    A promotion also records the champion it replaced (``from``), so an alias moved by hand
    outside these commands is still rolled back to.
    """
    stack: list[str] = []
    for event in events:
        if event["action"] == "promote":
            previous = event.get("from")
            if previous and (not stack or stack[-1] != previous):
                stack.append(previous)
            stack.append(event["version"])
        else:  # rollback to event["version"]
            while stack and stack[-1] != event["version"]:
                stack.pop()
            if not stack:
                stack.append(event["version"])
    return stack


def _append_event(client, name: str, event: dict[str, Any]) -> str:
    """Record ``event`` as the next ``champion_history.<seq>`` tag and return its key.

    One short tag per event, so the history never outgrows what a tag value may hold. Two
    people acting at the same moment may pick the same number; the one whose value was
    overwritten sees that on reading it back and takes the next number.
    """
    event = {**event, "reason": str(event.get("reason", ""))[:MAX_REASON_CHARS]}
    value = json.dumps(event, separators=(",", ":"))
    tags = require_model(client, name).tags or {}
    seq = max((s for key in tags if (s := _history_seq(key)) is not None), default=0) + 1
    for _ in range(10):
        key = history_tag(seq)
        client.set_registered_model_tag(name, key, value)
        if (require_model(client, name).tags or {}).get(key) == value:
            return key
        seq += 1
    raise PipelineError(f"could not record the {event['action']} of '{name}' in its history.")


# ---------------------------------------------------------------------------- register
def read_descriptor(model_dir: Path) -> ModelDescriptor:
    """The export's ``model.json``, or a PipelineError saying what to do."""
    try:
        return ModelDescriptor.read(model_dir)
    except DescriptorError as exc:
        raise PipelineError(
            f"the model descriptor in '{model_dir}' cannot be used: {exc}. Run the pipeline "
            f"(`make run`) to export a model; `{DESCRIPTOR_FILE}` is written by the export stage."
        ) from None


@dataclass(frozen=True)
class Registered:
    version: str
    created: bool
    run_id: str


def check_gate_report(
    gate: dict[str, Any],
    descriptor: ModelDescriptor,
    onnx_sha256: str,
    model_dir: Path | None = None,
) -> None:
    """Refuse unless the gate passed for exactly this export (its graph, and with
    ``model_dir`` its descriptor and golden rows, as the gate hashed them)."""
    if not gate.get("passed"):
        failed = ", ".join(gate.get("failed") or []) or "unknown checks"
        raise PipelineError(
            f"the gate failed for this model (failed checks: {failed}), so it cannot be "
            "registered. Read reports/gate.md, fix the model or data, and rerun `make gate`."
        )
    candidate = gate.get("candidate") or {}
    run_id = descriptor.lineage.run_id
    if candidate.get("run_id") != run_id:
        raise PipelineError(
            f"the gate report is for another export (run {candidate.get('run_id')}), not the one "
            f"in the model directory (run {run_id}); rerun `make gate` before registering."
        )
    for key, file in (("descriptor_sha256", DESCRIPTOR_FILE), ("golden_sha256", GOLDEN_FILE)):
        judged = candidate.get(key)
        path = Path(model_dir) / file if model_dir is not None else None
        if judged and path is not None and path.is_file() and file_sha256(path) != judged:
            raise PipelineError(
                f"{file} changed since the gate judged this export: the file was edited. "
                "Rerun the pipeline (`make run`) to export and gate it again."
            )
    if candidate.get("onnx_sha256") != onnx_sha256:
        raise PipelineError(
            f"model.onnx changed since the gate judged it (sha256 {onnx_sha256[:12]}, the gate "
            f"saw {str(candidate.get('onnx_sha256'))[:12]}): the file was edited or damaged. "
            "Rerun the pipeline (`make run`) to export and gate it again."
        )


def _input_kinds(descriptor: ModelDescriptor) -> str:
    return json.dumps([{"name": i.name, "kind": i.kind} for i in descriptor.inputs])


def check_same_kind_of_model(client, name: str, descriptor: ModelDescriptor) -> None:
    """Refuse to add a model of another task or other inputs to ``name`` while its champion is
    a different kind of model: one registered name is one table's model, and a promotion would
    otherwise hand the server a model that cannot answer its clients' requests."""
    try:
        champion = alias_version(client, name, CHAMPION)
    except PipelineError:  # no such registered model yet
        return
    if champion is None:
        return
    tags = champion.tags or {}
    task, inputs = tags.get("task"), tags.get("inputs")
    differs = []
    if task is not None and task != descriptor.task.value:
        differs.append(
            f"its champion (version {champion.version}) is a {task} model, this export "
            f"is {descriptor.task.value}"
        )
    theirs = {i["name"]: i["kind"] for i in json.loads(inputs)} if inputs else None
    if theirs is not None and theirs != {i.name: i.kind for i in descriptor.inputs}:
        differs.append(f"its champion (version {champion.version}) takes other inputs")
    if differs:
        raise PipelineError(
            f"registered model '{name}' belongs to other data: {'; '.join(differs)}. Set "
            "registry.model_name in params.yaml to a name for this data (`auto` names it after "
            "the data), rerun the pipeline and register again."
        )


def version_tags(
    descriptor: ModelDescriptor,
    gate: dict[str, Any],
    params: dict[str, Any],
    dvc_lock_sha256: str,
    onnx_sha256: str,
    run_tags: dict[str, str],
) -> dict[str, str]:
    """Everything needed to trace a version back to its code, data, params and decision."""
    lineage = descriptor.lineage
    metrics = (gate.get("candidate") or {}).get("metrics") or dict(descriptor.metrics)
    return {
        RUN_ID_TAG: str(lineage.run_id),
        "git_commit": lineage.git_commit or run_tags.get("git_commit", "unknown"),
        "dvc_lock_sha256": dvc_lock_sha256,
        "data_sha256": lineage.data_sha256 or run_tags.get("data_sha256", "unknown"),
        "params": json.dumps(params, sort_keys=True),
        "metrics": json.dumps(metrics, sort_keys=True),
        "gate": json.dumps(_gate_summary(gate), sort_keys=True),
        "gate_passed": "true",
        "estimator": descriptor.estimator,
        "family": descriptor.family,
        "task": descriptor.task.value,
        "inputs": _input_kinds(descriptor),
        "onnx_sha256": onnx_sha256,
        "saved_model": (
            f"{EXPORT_ARTIFACT_DIR}/{descriptor.saved_model.dir}"
            if descriptor.saved_model
            else "none"
        ),
        "registered_by": actor(),
        "registered_at": _now(),
    }


def _onnx_logged_model(client, run) -> str | None:
    """The ONNX MLflow model the export stage logged to the run.

    Export tags the run with ``export.onnx_model_uri``; without that tag, the newest
    ONNX-flavoured logged model of the run.
    """
    import mlflow

    tagged = run.data.tags.get(EXPORT_MODEL_URI_TAG, "")
    if tagged.startswith("models:/m-"):
        return tagged.removeprefix("models:/")
    models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    onnx = [
        m for m in models if "onnx" in mlflow.models.get_model_info(f"models:/{m.model_id}").flavors
    ]
    if not onnx:
        return None
    return max(onnx, key=lambda m: m.creation_timestamp).model_id


def _log_onnx_model(run_id: str, onnx_path: Path) -> str:
    """Log the ONNX file as an MLflow model to the run, for an export that did not."""
    import mlflow
    import onnx

    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(onnx.load(str(onnx_path)), name="onnx_model")
    return info.model_id


def register_export(
    name: str,
    model_dir: str | Path,
    gate: dict[str, Any],
    params: dict[str, Any],
    dvc_lock: str | Path,
) -> Registered:
    """Register the gated export as a new version of ``name`` with the ``challenger`` alias."""
    import mlflow
    from mlflow.exceptions import MlflowException

    model_dir = Path(model_dir)
    descriptor = read_descriptor(model_dir)
    onnx_path = model_dir / descriptor.onnx.file
    onnx_sha256 = file_sha256(onnx_path)
    check_gate_report(gate, descriptor, onnx_sha256, model_dir)
    if not Path(dvc_lock).is_file():
        raise PipelineError(f"'{dvc_lock}' is missing; run the pipeline with `dvc repro` first.")
    run_id = descriptor.lineage.run_id

    client = _client()
    check_same_kind_of_model(client, name, descriptor)
    existing = client.search_model_versions(f"name = '{name}' and tags.{RUN_ID_TAG} = '{run_id}'")
    if existing:
        version = existing[0]
        if version.tags.get("onnx_sha256") != onnx_sha256:
            raise PipelineError(
                f"run {run_id} is already registered as version {version.version} of '{name}' "
                "with a different model.onnx; a pipeline run registers once. Retrain "
                "(`make retrain`) to get a new run."
            )
        _finish_registration(client, name, str(version.version))
        return Registered(str(version.version), False, run_id)

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise PipelineError(
            f"MLflow run {run_id} (lineage.run_id of '{model_dir}/model.json') is not in the "
            "store (DVC's run cache can restore a train stage run against another MLflow "
            "store); retrain with `make retrain` for a run in this one."
        ) from None
    model_id = _onnx_logged_model(client, run) or _log_onnx_model(run_id, onnx_path)
    client.log_model_artifacts(model_id, str(model_dir), EXPORT_ARTIFACT_DIR)
    tags = version_tags(descriptor, gate, params, file_sha256(dvc_lock), onnx_sha256, run.data.tags)
    version = mlflow.register_model(f"models:/{model_id}", name, tags=tags)
    twins = client.search_model_versions(f"name = '{name}' and tags.{RUN_ID_TAG} = '{run_id}'")
    first = min((int(v.version) for v in twins), default=int(version.version))
    if first < int(version.version):
        # Another `make register` of this run got in between the search above and ours: one
        # version per run, so ours goes and theirs stands.
        client.delete_model_version(name, version.version)
        _finish_registration(client, name, str(first))
        return Registered(str(first), False, run_id)
    metrics = json.loads(tags["metrics"])
    shown = ", ".join(
        f"{k} {metrics[k]:.4f}" for k in ("f1_macro", "roc_auc_ovr", "rmse", "r2") if k in metrics
    )
    client.update_model_version(
        name,
        version.version,
        description=f"{tags['estimator']} from pipeline run {run_id}; test {shown}.",
    )
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return Registered(str(version.version), True, run_id)


def _gate_summary(gate: dict[str, Any]) -> dict[str, Any]:
    """The gate's verdict as a version tag: the decision and each check's numbers. The whole
    report (a leakage score per feature) outgrows the 5,000 characters PostgreSQL and MySQL
    keep for a tag on a wide table; it is in the run's ``gate/`` artifacts."""
    keep = ("passed", "compared_with_champion", "champion_version", "model_name", "failed")
    checks = [
        {k: c.get(k) for k in ("name", "passed", "value", "threshold", "op")}
        for c in gate.get("checks", [])
    ]
    candidate = {"run_id": (gate.get("candidate") or {}).get("run_id")}
    return {**{k: gate.get(k) for k in keep}, "candidate": candidate, "checks": checks}


def _finish_registration(client, name: str, version: str) -> None:
    """The last step of a registration that stopped before it (a crash, an interrupt): the
    ``challenger`` alias, unless a newer version holds it or this one is the champion."""
    challenger = alias_version(client, name, CHALLENGER)
    champion = alias_version(client, name, CHAMPION)
    if champion is not None and str(champion.version) == version:
        return
    if challenger is None or int(challenger.version) < int(version):
        client.set_registered_model_alias(name, CHALLENGER, version)


# ---------------------------------------------------------------------------- promote, rollback
@dataclass(frozen=True)
class Moved:
    version: str
    previous: str | None
    changed: bool


def promote(
    name: str, version: str | None, reason: str, who: str | None = None, force: bool = False
) -> Moved:
    """Point ``champion`` at ``version`` (default: the challenger) if its gate passed, it is
    the champion's kind of model, and its gate judged it against the current champion (or
    ``force``, recorded)."""
    client = _client()
    require_model(client, name)
    if version is None:
        target = require_alias(
            client,
            name,
            CHALLENGER,
            " Register a model first (`make register`) or name one: `make promote VERSION=n`.",
        )
    else:
        target = require_version(client, name, version)
    target_v = str(target.version)
    if (target.tags or {}).get("gate_passed") != "true":
        raise PipelineError(
            f"version {target_v} of '{name}' has no passing gate recorded (tag gate_passed is "
            f"{(target.tags or {}).get('gate_passed', 'missing')!r}); only versions registered "
            "by `make register` after a passing gate can become champion."
        )
    current = alias_version(client, name, CHAMPION)
    previous = None if current is None else str(current.version)
    if previous == target_v:
        return Moved(target_v, previous, False)
    if current is not None:
        _require_same_kind(current, target, name)
        judged = _gated_against(target)
        if judged != previous and not force:
            against = f"champion version {judged}" if judged else "no champion"
            raise PipelineError(
                f"version {target_v} of '{name}' was gated against {against}, not the current "
                f"champion (version {previous}): nothing says it does as well. Gate it against "
                "the champion (rerun the pipeline on its params and `make register`), or "
                f"promote it anyway with `make promote VERSION={target_v} FORCE=1` (recorded)."
            )
    require_servable(name, target_v)  # the server's own check, before the alias moves

    who = who or actor()
    at = _now()
    why = (reason or "(no reason given)")[:MAX_REASON_CHARS]
    if force:
        why = f"[forced past the champion gate] {why}"[:MAX_REASON_CHARS]
    client.set_registered_model_alias(name, CHAMPION, target_v)
    for key, value in {
        "promoted_by": who,
        "promoted_at": at,
        "promotion_reason": why,
        "previous_champion": previous or "none",
    }.items():
        client.set_model_version_tag(name, target_v, key, value)
    event = {"action": "promote", "version": target_v, "from": previous}
    _append_event(client, name, {**event, "by": who, "at": at, "reason": why})
    return Moved(target_v, previous, True)


def _gated_against(version) -> str | None:
    """The champion version the version's recorded gate compared it with (None: none)."""
    try:
        gate = json.loads((version.tags or {}).get("gate", "{}"))
    except ValueError:
        return None
    judged = gate.get("champion_version") if gate.get("compared_with_champion") else None
    return None if judged is None else str(judged)


def _require_same_kind(champion, target, name: str) -> None:
    """Refuse to make champion a model of another task or other inputs than the champion's:
    every server following the alias would take it and refuse its clients' requests."""
    a, b = champion.tags or {}, target.tags or {}
    differs = []
    if a.get("task") and b.get("task") and a["task"] != b["task"]:
        differs.append(f"it is a {b['task']} model and the champion a {a['task']} one")
    if a.get("inputs") and b.get("inputs"):
        theirs = {i["name"]: i["kind"] for i in json.loads(a["inputs"])}
        ours = {i["name"]: i["kind"] for i in json.loads(b["inputs"])}
        if theirs != ours:
            differs.append("it takes other inputs than the champion")
    if differs:
        raise PipelineError(
            f"version {target.version} of '{name}' is not the champion's kind of model: "
            f"{'; '.join(differs)} (version {champion.version}). The alias was not moved."
        )


def rollback(name: str, reason: str, who: str | None = None) -> Moved:
    """Point ``champion`` back at the champion before the current one."""
    from mlflow.exceptions import MlflowException

    client = _client()
    model = require_model(client, name)
    current = require_alias(
        client, name, CHAMPION, " There is nothing to roll back; promote a version first."
    )
    current_v = str(current.version)
    events = load_history(model)
    stack = champion_stack(events)
    while stack and stack[-1] == current_v:
        stack.pop()
    while stack:  # skip versions deleted since
        try:
            client.get_model_version(name, stack[-1])
            break
        except MlflowException:
            stack.pop()
    if not stack:
        raise PipelineError(
            f"model '{name}' has no previous champion to roll back to: its {HISTORY_TAG}.* "
            f"tags record no champion before version {current_v}."
        )
    target_v = stack[-1]
    _require_same_kind(current, client.get_model_version(name, target_v), name)
    require_servable(name, target_v)  # the server's own check, before the alias moves
    who = who or actor()
    at = _now()
    why = (reason or "(no reason given)")[:MAX_REASON_CHARS]
    client.set_registered_model_alias(name, CHAMPION, target_v)
    for key, value in {"rolled_back_by": who, "rolled_back_at": at, "rollback_reason": why}.items():
        client.set_model_version_tag(name, current_v, key, value)
    event = {"action": "rollback", "version": target_v, "from": current_v}
    _append_event(client, name, {**event, "by": who, "at": at, "reason": why})
    return Moved(target_v, current_v, True)


# ---------------------------------------------------------------------- what `make serve` serves
def serving_source(
    model_dir: Path, name: str, gate_report: Path = Path("reports/gate.json")
) -> tuple[dict[str, str], str]:
    """The server's settings for ``make serve`` and one sentence saying what it will serve.

    In order: ``SERVING_MODEL_URI`` when it is set; else ``model_dir`` when it holds a
    readable export (after a failed export that is still the previous, complete one: DVC keeps
    it, see ``persist`` in dvc.yaml) and did not fail its gate (``gate_report`` for that run;
    a failed export is served only while there is no champion, and said so); else the
    registry's ``@champion`` of ``name``. Neither: a PipelineError saying how to get a model.
    """
    from pipeline.tracking import tracking_uri

    uri = os.environ.get("SERVING_MODEL_URI")
    if uri:
        # The project's store unless MLFLOW_TRACKING_URI names another: left unset, MLflow
        # looked in ./mlflow.db (its own default), found no such model and created the file.
        store = tracking_uri()
        return {"SERVING_MODEL_URI": uri, "MLFLOW_TRACKING_URI": store}, (
            f"serve: {uri} (SERVING_MODEL_URI) from the registry at {store}."
        )
    version = None
    try:
        d = ModelDescriptor.read(model_dir)
    except DescriptorError as exc:
        why = str(exc)
    else:
        said = f"the export in '{model_dir}' ({d.name}, {d.estimator}, run {d.lineage.run_id})"
        failed = _failed_gate(gate_report, d.lineage.run_id)
        if failed is None:
            return {"SERVING_MODEL_DIR": str(model_dir)}, f"serve: {said}."
        version = _local_champion(name)
        if version is None:  # nothing better to serve: the export, said loudly
            return {"SERVING_MODEL_DIR": str(model_dir)}, (
                f"serve: {said}, which FAILED its gate ({failed}); '{name}' has no "
                f"@{CHAMPION} to serve instead. Do not ship it."
            )
        why = f"it FAILED its gate ({failed})"
    store = tracking_uri()
    version = version or _local_champion(name)
    if version is None:
        raise PipelineError(
            f"there is no model to serve: {why}, and '{name}' has no @{CHAMPION} in the "
            f"registry at {store}. Run the pipeline (`make run`), or point MODEL_DIR at an "
            "export directory or SERVING_MODEL_URI at a registered model."
        )
    champion = f"models:/{name}@{CHAMPION}"
    return {
        "SERVING_MODEL_DIR": "",
        "SERVING_MODEL_URI": champion,
        "MLFLOW_TRACKING_URI": store,
    }, (
        f"serve: no usable export in '{model_dir}' ({why}); serving the registry's champion "
        f"{champion} (version {version.version}) instead."
    )


def _local_champion(name: str):
    """The champion version of ``name`` in the configured store, without creating a store."""
    from pipeline.tracking import LOCAL_STORE

    if os.environ.get("MLFLOW_TRACKING_URI") or (LOCAL_STORE / "mlflow.db").is_file():
        return champion_of(name)[0]
    return None


def _failed_gate(path: Path, run_id: str | None) -> str | None:
    """What failed, when ``path`` is the gate report of run ``run_id`` and it did not pass."""
    try:
        gate = read_json(path)
    except (OSError, ValueError):
        return None
    if gate.get("passed") or (gate.get("candidate") or {}).get("run_id") != run_id:
        return None
    failed = gate.get("failed") or ["not judged"]
    return f"{path}: {', '.join(map(str, failed[:4]))}"


def _serve_source(args: argparse.Namespace) -> None:
    import shlex
    import sys

    name = model_name(load_params(args.params))
    settings, message = serving_source(Path(args.model_dir), name)
    print(message, file=sys.stderr)
    print(" ".join(f"{k}={shlex.quote(v)}" for k, v in settings.items()))


# ---------------------------------------------------------------------------- CLI
def _register(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    try:
        gate = read_json(args.gate)
    except FileNotFoundError:
        raise PipelineError(
            f"gate report '{args.gate}' does not exist; run `make gate` before registering."
        ) from None
    from pipeline.tracking import configure

    configure(params.mlflow.experiment)
    name = model_name(params)
    result = register_export(name, args.model_dir, gate, flatten(params), args.dvc_lock)
    if not result.created:
        print(
            f"register: run {result.run_id} is already version {result.version} of '{name}'; "
            "nothing to do."
        )
        return
    print(
        f"register: '{name}' version {result.version} (run {result.run_id}) is @{CHALLENGER}. "
        f"Promote it with `make promote` (models:/{name}@{CHALLENGER})."
    )


def _promote(args: argparse.Namespace) -> None:
    name = model_name(load_params(args.params))
    moved = promote(name, args.version, args.reason, force=args.force)
    if not moved.changed:
        print(f"promote: version {moved.version} of '{name}' is already @{CHAMPION}; no change.")
        return
    print(
        f"promote: '{name}' @{CHAMPION} -> version {moved.version} "
        f"(was {moved.previous or 'none'}); models:/{name}@{CHAMPION}"
    )


def _rollback(args: argparse.Namespace) -> None:
    name = model_name(load_params(args.params))
    moved = rollback(name, args.reason)
    print(f"rollback: '{name}' @{CHAMPION} -> version {moved.version} (was {moved.previous}).")


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "register": _register,
    "promote": _promote,
    "rollback": _rollback,
    "serve-source": _serve_source,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("register", help="register the gated export as the challenger")
    reg.add_argument("--params", required=True)
    reg.add_argument("--model-dir", required=True, help="the exported model (models/export)")
    reg.add_argument("--gate", required=True, help="the gate report (reports/gate.json)")
    reg.add_argument("--dvc-lock", required=True, help="dvc.lock, hashed into the version's tags")
    pro = sub.add_parser("promote", help="move @champion to a version (default: @challenger)")
    pro.add_argument("--params", required=True)
    pro.add_argument("--version", help="version number (default: the @challenger)")
    pro.add_argument("--reason", default="", help="why, recorded in the version's tags")
    pro.add_argument(
        "--force",
        action="store_true",
        help="promote a version gated against another champion than the current one",
    )
    rol = sub.add_parser("rollback", help="move @champion back to the previous champion")
    rol.add_argument("--params", required=True)
    rol.add_argument("--reason", default="", help="why, recorded in the version's tags")
    src = sub.add_parser(
        "serve-source", help="print the server settings `make serve` uses (dir or champion)"
    )
    src.add_argument("--params", required=True)
    src.add_argument("--model-dir", required=True, help="the export to serve (models/export)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return cli(args.command)(COMMANDS[args.command])(args)


if __name__ == "__main__":
    raise SystemExit(main())
