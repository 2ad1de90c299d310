"""The prediction and feedback logs as their readers see them, defined once.

``serving/predlog.py`` writes them; the monitor (``pipeline/stages/monitor.py``) and
``make compare`` (``serving/compare.py``) read them through this module. A log is the live
file and its rotated copies (``<log>.1``, ``<log>.2`` ..., also gzipped by logrotate:
``<log>.1.gz``). Lines are split on ``\\n`` alone (``str.splitlines`` would also split on
U+2028, U+2029 and U+0085, which JSON may leave raw in a string).

A damaged line (not JSON, a record of the wrong shape, a time that is not ISO 8601: a server
killed mid-write, a disk that filled, a hand edit) is skipped and counted in :class:`Damage`,
so one bad line does not stop monitoring. A file with more damaged lines than records is not
taken for a log of this kind: :class:`LogError`.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

#: How many damaged lines are named (``file:line: why``); the rest are counted.
EXAMPLES = 5
#: The time format the server writes; other ISO 8601 forms are converted to it.
_TS = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z"
)
_NUMBER = (int, float)
_SCALAR = (str, int, float, bool, type(None))


class LogError(ValueError):
    """A log that cannot be read as a log of its kind."""


@dataclass
class Damage:
    """Lines skipped as damaged: how many, and the first few as ``file:line: why``."""

    lines: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, why: str) -> None:
        self.lines += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(f"{where}: {why}")

    def as_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "examples": list(self.examples)}

    def message(self, what: str) -> str:
        return f"skipped {self.lines} damaged line(s) of the {what} (first: {self.examples[0]})"


def log_files(path: str | Path) -> list[Path]:
    """``path`` and its rotated siblings that exist, oldest first: ``path.N`` (or
    ``path.N.gz``) ... ``path.1``, then ``path``."""
    path = Path(path)
    rotated = []
    for sibling in path.parent.glob(f"{path.name}.*"):
        suffix = sibling.name[len(path.name) + 1 :]
        number = suffix.removesuffix(".gz")
        if number.isdigit():
            rotated.append((int(number), sibling.name.endswith(".gz"), sibling))
    files = [p for _, _, p in sorted(rotated, reverse=True)]
    return [*files, path] if path.is_file() else files


def canonical_ts(value: Any) -> str | None:
    """``ts`` as the server writes it (``2026-12-01T09:00:00.123456Z``, so times compare as
    strings), converted from any other ISO 8601 form (no zone: UTC); None if it is not one."""
    if type(value) is not str:
        return None
    if len(value) == 27 and _TS.fullmatch(value):
        return value
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso_micro(moment.timestamp())


def iso_micro(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")  # fmt: skip


def _is_row(value: Any) -> bool:
    return type(value) is int and value >= 0


def prediction_problem(record: Any) -> str | None:
    """Why ``record`` is not a prediction-log record (``serving/predlog.py``), or None."""
    if type(record) is not dict:
        return f"a record is a JSON object, not {_kind(record)}"
    for key, kind, name in (
        ("request_id", str, "a string"),
        ("inputs", dict, "an object"),
        ("output", dict, "an object"),
        ("model", dict, "an object"),
    ):
        if type(record.get(key)) is not kind:
            return f"'{key}' is {_kind(record.get(key))}, not {name}"
    if not _is_row(record.get("row", 0)):
        return f"'row' is {record.get('row')!r}, not a row number"
    if type(record.get("variant", "champion")) is not str:
        return "'variant' is not a string"
    if type(record.get("served", True)) is not bool:
        return "'served' is not true or false"
    latency = record.get("latency_ms", 0.0)
    if type(latency) not in _NUMBER or not math.isfinite(latency) or latency < 0:
        return f"'latency_ms' is {latency!r}, not a duration"
    model = record["model"]
    if type(model.get("name")) is not str or type(model.get("version")) not in (str, int):
        return "'model' has no name and version"
    output = record["output"]
    if "label" in output:
        if type(output["label"]) not in _SCALAR:
            return f"'output.label' is {_kind(output['label'])}"
    elif "value" in output:
        if type(output["value"]) not in (int, float, type(None)):
            return f"'output.value' is {_kind(output['value'])}, not a number"
    else:
        return "'output' has neither 'label' nor 'value'"
    return None


def feedback_problem(record: Any) -> str | None:
    """Why ``record`` is not a feedback-log record (``serving/feedback.py``), or None."""
    if type(record) is not dict:
        return f"a record is a JSON object, not {_kind(record)}"
    if type(record.get("request_id")) is not str:
        return f"'request_id' is {_kind(record.get('request_id'))}, not a string"
    if not _is_row(record.get("row", 0)):
        return f"'row' is {record.get('row')!r}, not a row number"
    if "actual" not in record or type(record["actual"]) not in _SCALAR:
        return "'actual' is missing or not a label or number"
    return None


def _lines(path: Path) -> list[tuple[int, bytes]]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise LogError(f"{path} is not a readable gzip file ({exc}).") from None
    return [(n, line) for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]


def read_records(
    files: Iterable[Path],
    problem: Callable[[Any], str | None],
    damage: Damage,
    what: str = "log",
) -> list[dict[str, Any]]:
    """Every record of ``files`` that ``problem`` finds nothing wrong with, each with
    ``_ts``, its time as a canonical string. Damaged lines go to ``damage``."""
    records: list[dict[str, Any]] = []
    files, before = list(files), damage.lines
    for path in files:
        numbered = _lines(path)
        try:  # a clean file parses in one call
            parsed = orjson.loads(b"[" + b",".join(line for _, line in numbered) + b"]")
        except orjson.JSONDecodeError:
            parsed = None
        for index, (number, line) in enumerate(numbered):
            if parsed is not None:
                record = parsed[index]
            else:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    damage.add(f"{path}:{number}", f"not JSON ({exc})")
                    continue
            why = problem(record)
            ts = None
            if why is None:
                ts = canonical_ts(record.get("ts"))
                if ts is None:
                    why = f"'ts' is {str(record.get('ts'))[:40]!r}, not an ISO 8601 time"
            if why is not None:
                damage.add(f"{path}:{number}", why)
                continue
            record["_ts"] = ts
            records.append(record)
    damaged = damage.lines - before
    if damaged > len(records):
        raise LogError(
            f"{files[-1] if files else what} does not read as a {what}: {damaged} damaged "
            f"line(s) against {len(records)} record(s) (first: {damage.examples[0]})."
        )
    return records
