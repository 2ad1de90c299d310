"""The prediction log, the feedback log and ``POST /feedback`` (format shared with
monitoring: one JSON line per predicted row)."""

from __future__ import annotations

import json
import re

import pytest

from serving.predlog import JsonLinesWriter
from tests.serving.conftest import FEATURES, MODEL_NAME, metric_samples

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def flush(app) -> None:
    state = app.extensions["serving"]
    for writer in (state.prediction_log and state.prediction_log.writer, state.feedback_log):
        if writer is not None:
            writer.flush()


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def logged(make_app, tmp_path):
    return make_app(
        prediction_log=tmp_path / "predictions.jsonl",
        feedback_log=tmp_path / "feedback.jsonl",
        api_token="tok",
    )


AUTH = {"Authorization": "Bearer tok"}


def test_one_line_per_row_in_the_shared_format(logged, golden, tmp_path):
    client = logged.test_client()
    rows = [r["inputs"] for r in golden["rows"][:2]]
    rows.append({**rows[0], "sex": None, "bill_length_mm": None})
    response = client.post(
        "/predict", json={"instances": rows}, headers={**AUTH, "X-Request-ID": "req-42"}
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req-42"
    body = response.get_json()
    assert body["request_id"] == "req-42" and body["variant"] == "champion"
    flush(logged)
    records = lines(tmp_path / "predictions.jsonl")
    assert [r["row"] for r in records] == [0, 1, 2]
    for record, row, prediction in zip(records, rows, body["predictions"], strict=True):
        assert set(record) == {
            "ts", "request_id", "row", "model", "variant", "served", "inputs", "output",
            "latency_ms",
        }  # fmt: skip
        assert TS.match(record["ts"]), record["ts"]
        assert record["request_id"] == "req-42"
        assert record["model"] == {"name": MODEL_NAME, "version": body["model"]["version"]}
        assert (record["variant"], record["served"]) == ("champion", True)
        assert list(record["inputs"]) == FEATURES
        assert record["inputs"] == row  # missing values as null, categories as sent
        assert record["output"] == prediction  # label and probabilities by class
        assert record["latency_ms"] > 0
    assert records[2]["inputs"]["sex"] is None  # a missing value is logged as null
    assert any(v is None for r in records for v in r["inputs"].values())
    samples = metric_samples(client.get("/metrics").get_data(as_text=True))
    assert samples[("serving_prediction_log_rows_total", (("outcome", "written"),))] == 3


def test_refused_requests_are_not_logged(logged, row, tmp_path):
    client = logged.test_client()
    assert client.post("/predict", json={"instances": [row]}).status_code == 401
    bad = {**row, "island": "Atlantis"}
    assert client.post("/predict", json={"instances": [bad]}, headers=AUTH).status_code == 422
    flush(logged)
    assert not (tmp_path / "predictions.jsonl").exists()


def test_sampling_is_per_request(make_app, row, tmp_path):
    off = make_app(prediction_log=tmp_path / "none.jsonl", prediction_log_sample=0.0)
    client = off.test_client()
    for _ in range(20):
        assert client.post("/predict", json={"instances": [row, row]}).status_code == 200
    flush(off)
    assert not (tmp_path / "none.jsonl").exists()
    half = make_app(prediction_log=tmp_path / "half.jsonl", prediction_log_sample=0.5)
    client = half.test_client()
    for i in range(200):
        client.post("/predict", json={"instances": [row, row]}, headers={"X-Request-ID": f"r{i}"})
    flush(half)
    records = lines(tmp_path / "half.jsonl")
    per_request = {}
    for r in records:
        per_request.setdefault(r["request_id"], []).append(r["row"])
    assert all(rows == [0, 1] for rows in per_request.values())  # whole requests
    assert 40 <= len(per_request) <= 160  # 100 expected; a wide margin, never 0 or 200


def test_full_queue_drops_and_counts_never_blocks(make_app, row, tmp_path):
    app = make_app(prediction_log=tmp_path / "p.jsonl", prediction_log_queue=2)
    writer = app.extensions["serving"].prediction_log.writer
    writer._pid = -1  # noqa: SLF001 - keep the writer thread from starting: nothing drains
    writer._start = lambda: None  # noqa: SLF001
    client = app.test_client()
    for _ in range(5):
        assert client.post("/predict", json={"instances": [row, row, row]}).status_code == 200
    samples = metric_samples(client.get("/metrics").get_data(as_text=True))
    assert samples[("serving_prediction_log_rows_total", (("outcome", "dropped"),))] == 9
    writer.flush()
    assert len(lines(tmp_path / "p.jsonl")) == 6


def test_rotation_keeps_newest_first_and_bounded(tmp_path):
    path = tmp_path / "p.jsonl"
    writer = JsonLinesWriter(path, max_bytes=4096, backups=2, queue_size=10_000)
    for i in range(300):
        writer.submit(json.dumps({"i": i, "pad": "x" * 40}).encode())
        if i % 50 == 49:
            writer.flush()
    writer.close()
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert files == ["p.jsonl", "p.jsonl.1", "p.jsonl.2"]
    newest, older, oldest = (lines(tmp_path / n) for n in files)
    assert newest[-1]["i"] == 299
    assert oldest[-1]["i"] < older[0]["i"] <= older[-1]["i"] < newest[0]["i"]
    assert all((tmp_path / n).stat().st_size < 4096 + 512 * 60 for n in files)


def test_feedback_is_appended_and_checked(logged, row, tmp_path):
    client = logged.test_client()
    served = client.post("/predict", json={"instances": [row, row]}, headers=AUTH).get_json()
    rid = served["request_id"]
    one = client.post("/feedback", json={"request_id": rid, "actual": "Adelie"}, headers=AUTH)
    assert one.status_code == 202 and one.get_json() == {"accepted": 1}
    many = client.post(
        "/feedback",
        json={"items": [{"request_id": rid, "row": 1, "actual": "Gentoo"}]},
        headers=AUTH,
    )
    assert many.status_code == 202
    flush(logged)
    records = lines(tmp_path / "feedback.jsonl")
    assert [{k: r[k] for k in ("request_id", "row", "actual")} for r in records] == [
        {"request_id": rid, "row": 0, "actual": "Adelie"},
        {"request_id": rid, "row": 1, "actual": "Gentoo"},
    ]
    assert all(TS.match(r["ts"]) for r in records)

    def refused(body, status, rule, field):
        response = client.post("/feedback", json=body, headers=AUTH)
        assert response.status_code == status, response.get_data(as_text=True)
        error = response.get_json()["error"]
        assert (error["rule"], error.get("field")) == (rule, field)

    refused({"request_id": rid, "actual": "Penguin"}, 422, "category", "actual")
    refused({"request_id": "a b", "actual": "Adelie"}, 422, "request_id", "request_id")
    refused({"request_id": rid}, 422, "required", "actual")
    refused({"items": [{"request_id": rid, "row": -1, "actual": "Adelie"}]}, 422, "type",
            "items[0].row")  # fmt: skip
    assert client.post("/feedback", json={"request_id": rid, "actual": "Adelie"}).status_code == 401


def test_feedback_row_may_be_an_integral_float(logged, tmp_path):
    """JSON Schema's "integer" (the document's type for ``row``) includes 2.0; schemathesis
    sent one and got a 422. 2.0 is row 2; 2.5 is still refused."""
    client = logged.test_client()
    ok = client.post("/feedback", json={"request_id": "r1", "row": 2.0, "actual": "Adelie"},
                     headers=AUTH)  # fmt: skip
    assert ok.status_code == 202, ok.get_data(as_text=True)
    bad = client.post("/feedback", json={"request_id": "r1", "row": 2.5, "actual": "Adelie"},
                      headers=AUTH)  # fmt: skip
    assert bad.status_code == 422 and bad.get_json()["error"]["field"] == "row"
    # A row number past the limit (here one too long for the log's 64-bit integers, read as an
    # integral float) is a 422 naming it, not a 500 when the log line is written.
    huge = client.post("/feedback", data='{"request_id": "r1", "row": 6' + "0" * 34 + ', "actual": '
                       '"Adelie"}', content_type="application/json", headers=AUTH)  # fmt: skip
    assert huge.status_code == 422 and huge.get_json()["error"]["field"] == "row"
    assert client.post("/feedback", json={"request_id": "r1", "row": 2**31, "actual": "Adelie"},
                       headers=AUTH).status_code == 422  # fmt: skip
    flush(logged)
    (record,) = lines(tmp_path / "feedback.jsonl")
    assert record["row"] == 2 and type(record["row"]) is int


def test_a_request_id_ending_in_a_newline_is_refused(logged, tmp_path):
    """``re.match`` with ``$`` also matches before a final newline: "r1\\n" was written to the
    feedback log as a request id no prediction can have, and kept as a client's X-Request-ID."""
    from serving.rsgi import request_id_from

    client = logged.test_client()
    response = client.post("/feedback", json={"request_id": "r1\n", "actual": "Adelie"},
                           headers=AUTH)  # fmt: skip
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["error"]["field"] == "request_id"
    assert request_id_from("r1\n") != "r1\n" and request_id_from("r1") == "r1"
    flush(logged)
    assert not (tmp_path / "feedback.jsonl").exists() or lines(tmp_path / "feedback.jsonl") == []


def test_feedback_off_without_a_log(client):
    response = client.post("/feedback", json={"request_id": "x", "actual": "Adelie"})
    assert response.status_code == 404
    assert response.get_json()["error"]["rule"] == "feedback_off"


def test_records_submitted_while_the_writer_drains_are_all_written(tmp_path):
    """Requests append without a lock while the writer thread takes the list every
    FLUSH_SECONDS: no record may be lost or written twice in that hand-over."""
    import threading

    path = tmp_path / "p.jsonl"
    writer = JsonLinesWriter(path, max_bytes=1 << 30, backups=1, queue_size=1_000_000)

    def produce(offset: int) -> None:
        for i in range(20_000):
            writer.submit(json.dumps({"i": offset + i}).encode())

    threads = [threading.Thread(target=produce, args=(n * 100_000,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    written = [r["i"] for r in lines(path)]
    assert len(written) == 60_000
    assert set(written) == {n * 100_000 + i for n in range(3) for i in range(20_000)}


def test_a_count_that_fails_does_not_stop_the_writer(tmp_path):
    """At shutdown the metrics store can be closed before the writer's last batch: the lines
    are still written, and the writer keeps going."""

    def closed_store(outcome: str, n: int) -> None:
        raise ValueError("operation forbidden on released memoryview object")

    path = tmp_path / "p.jsonl"
    writer = JsonLinesWriter(
        path, max_bytes=1 << 20, backups=1, queue_size=100, on_count=closed_store
    )
    for i in range(3):
        writer.submit(json.dumps({"i": i}).encode())
        writer.flush()
    writer.close()
    assert [r["i"] for r in lines(path)] == [0, 1, 2]


def test_rate_limit_logs_small_traffic_in_full_and_caps_a_burst(make_app, row, tmp_path):
    """Below SERVING_PREDICTION_LOG_RATE_LIMIT rows per second every row is logged; a
    request that overdraws the bucket is still logged whole, and the requests after it are
    not until the bucket refills: counted as rate_limited, never an error."""
    app = make_app(prediction_log=tmp_path / "p.jsonl", prediction_log_rate_limit=2)
    client = app.test_client()
    big = client.post("/predict", json={"instances": [row] * 100})
    assert big.status_code == 200
    for _ in range(9):  # the bucket is 98 rows short: 49 s at 2 rows/s
        assert client.post("/predict", json={"instances": [row]}).status_code == 200
    flush(app)
    records = lines(tmp_path / "p.jsonl")
    assert len(records) == 100 and {r["request_id"] for r in records} == {
        big.get_json()["request_id"]
    }
    samples = metric_samples(client.get("/metrics").get_data(as_text=True))
    family = "serving_prediction_log_rows_total"
    assert samples[(family, (("outcome", "written"),))] == 100
    assert samples[(family, (("outcome", "rate_limited"),))] == 9


def test_rate_limit_refills_with_time():
    """The bucket holds one second's worth and refills at the limit."""
    from serving.predlog import PredictionLog

    counted = []
    log = PredictionLog(
        writer=None, sample=1.0, rate_limit=10, on_count=lambda o, n: counted.append((o, n))
    )
    assert [log.wants(1) for _ in range(12)] == [True] * 10 + [False] * 2
    assert counted == [("rate_limited", 1)] * 2
    log._refilled -= 0.5  # noqa: SLF001 - half a second later: 5 rows' worth
    assert [log.wants(1) for _ in range(6)] == [True] * 5 + [False]
    log._refilled -= 60  # noqa: SLF001 - a long quiet spell refills one second's worth, no more
    assert sum(log.wants(1) for _ in range(20)) == 10
    unlimited = PredictionLog(writer=None, sample=1.0, rate_limit=0)
    assert all(unlimited.wants(100) for _ in range(1000))


def test_a_large_batch_is_rotated_within_the_bound(tmp_path):
    """A batch of 1,000-row requests was written in one go past ``max_bytes``: 7.9 MB on disk
    for a 100 KB x 3 bound. Now the writes are cut to fit and each file stays bounded."""
    path = tmp_path / "p.jsonl"
    # 101-byte lines: a slice of 64 of them (6,464 bytes) is over the bound.
    writer = JsonLinesWriter(path, max_bytes=3_000, backups=2, queue_size=10_000)
    for i in range(2_000):
        writer.submit(json.dumps({"i": i, "pad": "x" * 80}).encode())
    writer.close()
    files = sorted(p for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert [p.name for p in files] == ["p.jsonl", "p.jsonl.1", "p.jsonl.2"]
    assert all(p.stat().st_size <= 3_000 for p in files), [p.stat().st_size for p in files]
    assert lines(path)[-1]["i"] == 1_999
    kept = [r["i"] for name in ("p.jsonl.2", "p.jsonl.1", "p.jsonl")
            for r in lines(tmp_path / name)]  # fmt: skip
    assert kept == list(range(kept[0], 2_000))  # the newest rows, in order, none twice


def test_feedback_without_a_model_is_still_checked(make_app, tmp_path):
    """With no model loaded (nothing to name the classes), NaN, 1e400 and a megabyte of text
    were accepted and logged (NaN as null)."""
    app = make_app(model_dir=tmp_path / "nowhere", feedback_log=tmp_path / "feedback.jsonl")
    client = app.test_client()
    for actual in ("NaN", "1e400", "-Infinity", '"' + "x" * 257 + '"', '""', "true", "[1]"):
        response = client.post(
            "/feedback", data='{"request_id": "r1", "actual": ' + actual + "}",
            content_type="application/json",
        )  # fmt: skip
        assert response.status_code in (400, 422), (actual, response.get_data(as_text=True))
        assert response.get_json()["error"]["field"] == "actual", actual
    for actual in ("Adelie", 3.5, 2):
        response = client.post("/feedback", json={"request_id": "r1", "actual": actual})
        assert response.status_code == 202, response.get_data(as_text=True)
    flush(app)
    assert [r["actual"] for r in lines(tmp_path / "feedback.jsonl")] == ["Adelie", 3.5, 2]


def test_shadow_latency_spans_what_the_champions_does(make_app, exported_model, golden, tmp_path):
    """Both variants' ``latency_ms`` run from the request's start: the shadow's used to start
    at its own scoring, so an identical model looked several times faster as the challenger
    in ``make compare``."""
    import time

    log = tmp_path / "predictions.jsonl"
    app = make_app(prediction_log=log, rollout="shadow", challenger_dir=exported_model,
                   prediction_log_rate_limit=0)  # fmt: skip
    client = app.test_client()
    # A request that started 50 ms ago (a slow body): both variants waited for it.
    response = client.post(
        "/predict",
        json={"instances": [golden["rows"][0]["inputs"]]},
        environ_base={"serving.started": time.perf_counter() - 0.05},
    )
    assert response.status_code == 200
    response.close()  # the challenger scores once the response is closed (sent)
    flush(app)
    records = {r["variant"]: r for r in lines(log)}
    assert set(records) == {"champion", "challenger"}
    assert records["challenger"]["served"] is False
    assert records["champion"]["latency_ms"] >= 50
    assert records["challenger"]["latency_ms"] >= 50


def test_a_torn_last_line_is_ended_before_the_next_write(logged, golden, tmp_path):
    """A file whose last line was cut (a crash mid-write, a full disk) gets a newline before
    the next record, so the torn line stays alone at its end and readers skip only it."""
    log = tmp_path / "predictions.jsonl"
    log.write_text('{"ts": "2026-12-01T09:00:00.000000Z", "requ')
    client = logged.test_client()
    response = client.post("/predict", json={"instances": [golden["rows"][0]["inputs"]]},
                           headers=AUTH)  # fmt: skip
    assert response.status_code == 200
    flush(logged)
    torn, written = log.read_text().split("\n")[:2]
    assert torn == '{"ts": "2026-12-01T09:00:00.000000Z", "requ'
    assert json.loads(written)["request_id"] == response.get_json()["request_id"]


def test_feedback_that_does_not_fit_the_queue_is_refused_not_dropped(make_app, tmp_path):
    """A batch larger than the queue's room was answered 202 "accepted" and half dropped."""
    app = make_app(feedback_log=tmp_path / "feedback.jsonl", prediction_log_queue=5)
    client = app.test_client()
    items = [{"request_id": f"r{i}", "actual": "Adelie"} for i in range(10)]
    response = client.post("/feedback", json={"items": items})
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.get_json()["error"]["rule"] == "feedback_queue_full"
    assert client.post("/feedback", json={"items": items[:5]}).get_json() == {"accepted": 5}
    flush(app)
    assert len(lines(tmp_path / "feedback.jsonl")) == 5
    samples = metric_samples(client.get("/metrics").get_data(as_text=True))
    assert samples[("serving_feedback_rows_total", (("outcome", "dropped"),))] == 10


def test_shadow_rows_count_against_the_rate_limit(make_app, exported_model, golden, tmp_path):
    """The challenger's rows were logged free of the limit: twice the rows a second."""
    log = tmp_path / "predictions.jsonl"
    app = make_app(prediction_log=log, rollout="shadow", challenger_dir=exported_model,
                   prediction_log_rate_limit=4)  # fmt: skip
    client = app.test_client()
    rows = [r["inputs"] for r in golden["rows"][:2]]
    for _ in range(2):  # 4 tokens: the first request's 2 + 2 shadow rows, then none left
        response = client.post("/predict", json={"instances": rows})
        assert response.status_code == 200
        response.close()
    flush(app)
    variants = [r["variant"] for r in lines(log)]
    assert sorted(variants) == ["challenger", "challenger", "champion", "champion"]
