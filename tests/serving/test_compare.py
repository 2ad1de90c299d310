"""``make compare`` (``python -m serving.compare``) on logs in the server's format: damaged
lines, null predictions, reused request ids, variants of different tasks."""

from __future__ import annotations

import json

import pytest

from serving.compare import compare, main, render

TS = "2026-12-01T09:00:00.000000Z"


def record(request_id, variant, output, *, row=0, latency=1.0, version="1", served=True):
    return {
        "ts": TS, "request_id": request_id, "row": row, "variant": variant, "served": served,
        "model": {"name": "m", "version": version}, "inputs": {"x": 1.0}, "output": output,
        "latency_ms": latency,
    }  # fmt: skip


def write(path, records, extra=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + extra)
    return path


def shadow_log(n=20):
    records = []
    for i in range(n):
        records.append(record(f"r{i}", "champion", {"label": "a" if i % 2 else "b"}))
        records.append(record(f"r{i}", "challenger", {"label": "a"}, served=False, version="2"))
    return records


def test_damaged_lines_are_skipped_and_named(tmp_path, capsys):
    log = write(tmp_path / "p.jsonl", shadow_log(), extra='{"ts": "2026-12-01T09:0\n')
    feedback = write(tmp_path / "f.jsonl", [
        {"ts": TS, "request_id": f"r{i}", "row": 0, "actual": "a"} for i in range(20)
    ])  # fmt: skip
    assert main(["--log", str(log), "--feedback", str(feedback)]) == 0
    out, err = capsys.readouterr()
    assert f"compare: skipped 1 damaged line(s) of the prediction log (first: {log}:41" in err
    assert "Agreement on 20 rows both scored: 50.00%." in out
    assert "accuracy, challenger minus champion: +0.5000" in out


def test_a_damaged_feedback_log_is_named_as_the_feedback_log(tmp_path, capsys):
    log = write(tmp_path / "p.jsonl", shadow_log())
    feedback = tmp_path / "f.jsonl"
    feedback.write_text('{"ts": "x", "request_id": "r1", "actual": "a"}\n')
    assert main(["--log", str(log), "--feedback", str(feedback)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"compare: {feedback} does not read as a feedback log: 1 damaged")
    assert main(["--log", str(log), "--feedback", str(tmp_path / "none.jsonl")]) == 1
    assert capsys.readouterr().err == f"compare: no feedback log at {tmp_path / 'none.jsonl'}\n"


def test_without_a_challenger_the_report_says_so(tmp_path):
    records = [record(f"r{i}", "champion", {"label": "a"}) for i in range(10)]
    feedback = [{"request_id": f"r{i}", "row": 0, "actual": "a"} for i in range(10)]
    report = compare(records, feedback)
    assert report["difference"]["method"] == (
        "no challenger rows in the log (is SERVING_ROLLOUT off?)"
    )


def test_null_predictions_are_not_scored_and_reused_ids_are_counted():
    records = [record(f"r{i}", "champion", {"value": float(i)}) for i in range(6)]
    records += [record(f"r{i}", "challenger", {"value": float(i) + 1}, served=False)
                for i in range(6)]  # fmt: skip
    records[0]["output"] = {"value": None}  # a model that overflowed
    records.append(record("r1", "champion", {"value": 1.0}))  # X-Request-ID reused
    feedback = [{"request_id": f"r{i}", "row": 0, "actual": float(i)} for i in range(6)]
    report = compare(records, feedback)
    assert report["champion"]["rows"] == 7 and report["champion"]["reused_request_ids"] == 1
    assert report["champion"]["requests"] == 7
    assert report["paired_rows"] == 5  # r0 has no champion value
    assert report["champion"]["mae"] == 0.0 and report["challenger"]["mae"] == 1.0
    assert report["difference"]["challenger_minus_champion"] == pytest.approx(1.0)
    assert "1 row(s) reuse a request id" in render(report)


def test_variants_of_different_tasks_are_reported_not_compared():
    records = [record(f"r{i}", "champion", {"label": "a"}) for i in range(4)]
    records += [record(f"c{i}", "challenger", {"value": 4600.0}) for i in range(4)]
    feedback = [{"request_id": "r1", "row": 0, "actual": "a"}]
    report = compare(records, feedback)
    assert report["comparable"] is False
    assert (report["champion"]["task"], report["challenger"]["task"]) == (
        "classification", "regression",
    )  # fmt: skip
    assert report["difference"]["method"].startswith("not comparable")
    text = render(report)
    assert "Not comparable: the champion does classification and the challenger regression" in text
