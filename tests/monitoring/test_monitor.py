"""The monitor's core and CLI on logs written in the server's format."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from model_spec.logs import Damage
from pipeline.config import load_params
from pipeline.contract import ColumnSpec, Contract
from pipeline.errors import PipelineError
from pipeline.stages.monitor import (
    RETRAIN_FILE,
    log_files,
    main,
    monitor_window,
    read_jsonl,
    to_window,
)
from tests.conftest import REPO_ROOT
from tests.monitoring.conftest import T0, iso, log_records, write_jsonl

PARAMS = load_params(REPO_ROOT / "params.yaml").monitor


def window_of(frame, contract, outputs=None, **kwargs):
    outputs = frame[contract.target] if outputs is None else outputs
    records = log_records(frame, contract.feature_names, list(outputs), **kwargs)
    for r in records:
        r["_ts"] = r["ts"]
    return to_window(records, contract, "classification"), records


def held_out(splits):
    return pd.concat([splits.test, splits.val], ignore_index=True)


# ------------------------------------------------------------------------ reading the log
def test_log_files_reads_rotated_files_oldest_first(tmp_path):
    log = tmp_path / "predictions.jsonl"
    for name in ("predictions.jsonl", "predictions.jsonl.1", "predictions.jsonl.2",
                 "predictions.jsonl.10", "predictions.jsonl.bak"):  # fmt: skip
        (tmp_path / name).write_text("")
    assert [p.name for p in log_files(log)] == [
        "predictions.jsonl.10",
        "predictions.jsonl.2",
        "predictions.jsonl.1",
        "predictions.jsonl",
    ]


def test_window_bounds_and_a_torn_last_line(tmp_path, splits, contract):
    records = log_records(splits.test.head(10), contract.feature_names, ["Adelie"] * 10)
    log = write_jsonl(tmp_path / "p.jsonl", records)
    with open(log, "a") as handle:
        handle.write('{"ts": "2026-12-01T09:00:11Z", "reque')  # the server died mid-line
    start = (T0 + timedelta(seconds=2)).timestamp()
    end = (T0 + timedelta(seconds=5)).timestamp()
    damage = Damage()
    got = read_jsonl([log], start, end, damage=damage)
    assert [r["request_id"] for r in got] == ["req-2", "req-3", "req-4"]
    assert damage.lines == 1 and damage.examples[0].startswith(f"{log}:11: not JSON")


def test_damaged_lines_are_skipped_and_counted(tmp_path, splits, contract):
    """A line appended onto a torn one (a restarted server), or a record of the wrong shape,
    is skipped and named; every good line around it still counts."""
    records = log_records(splits.test.head(20), contract.feature_names, ["Adelie"] * 20)
    log = tmp_path / "p.jsonl"
    lines = [json.dumps(r) for r in records]
    lines[5] = lines[5][:40] + lines[6]  # torn, then the next write on the same line
    del lines[6]
    lines += [
        json.dumps({**records[0], "inputs": "abc"}),
        json.dumps({**records[0], "row": None}),
        json.dumps({**records[0], "request_id": [1]}),
        json.dumps({**records[0], "output": {"label": {"x": 1}}}),
        json.dumps({**records[0], "model": "m"}),
        json.dumps({**records[0], "ts": "2026-99-99T99:99:99.999999Z"}),
        json.dumps([1, 2]),
        "\x00\x01 binary",
    ]
    log.write_text("\n".join(lines) + "\n")
    damage = Damage()
    got = read_jsonl([log], None, float("inf"), damage=damage)
    assert len(got) == 18
    assert damage.lines == 9
    assert damage.examples[0].startswith(f"{log}:6: not JSON")
    assert damage.examples[1:5] == [
        f"{log}:20: 'inputs' is a string, not an object",
        f"{log}:21: 'row' is None, not a row number",
        f"{log}:22: 'request_id' is an array, not a string",
        f"{log}:23: 'output.label' is an object",
    ]


def test_a_file_that_is_not_a_log_is_named(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"ts": "2026-12-01T09:00:00Z"}\nnot json\n')
    with pytest.raises(
        PipelineError,
        match=r"p\.jsonl does not read as a prediction log: 2 damaged line\(s\) against 0 "
        r"record\(s\) \(first: .*p\.jsonl:1: 'request_id' is null, not a string\)",
    ):
        read_jsonl([bad], None, float("inf"))


def test_lines_split_on_newlines_only_and_gzipped_rotations_count(tmp_path, splits, contract):
    records = log_records(splits.test.head(6), contract.feature_names, ["Adelie"] * 6)
    records[0]["request_id"] = "a\u2028b\x85c"  # raw in JSON text: not a line break there
    log = tmp_path / "p.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[3:])
    log.write_text(text, encoding="utf-8")
    old = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[:3])
    (tmp_path / "p.jsonl.1.gz").write_bytes(gzip.compress(old.encode()))
    assert [p.name for p in log_files(log)] == ["p.jsonl.1.gz", "p.jsonl"]
    got = read_jsonl(log_files(log), None, float("inf"))
    assert [r["request_id"] for r in got] == ["a\u2028b\x85c", "req-1", "req-2", "req-3",
                                              "req-4", "req-5"]  # fmt: skip


def test_shadow_rows_are_counted_not_compared(splits, contract):
    served = log_records(splits.test, contract.feature_names, splits.test["species"])
    shadow = log_records(
        splits.test, contract.feature_names, ["Gentoo"] * len(splits.test),
        prefix="shadow", served=False, variant="challenger",
    )  # fmt: skip
    for r in served + shadow:
        r["_ts"] = r["ts"]
    window = to_window(served + shadow, contract, "classification")
    assert len(window.inputs) == len(splits.test)
    assert window.shadow_rows == len(splits.test)
    assert set(window.output) <= {"Adelie", "Chinstrap", "Gentoo"}


# ------------------------------------------------------------------------ drift
def test_held_out_rows_do_not_drift(splits, contract):
    window, _ = window_of(held_out(splits), contract)
    summary = monitor_window(window, splits.train, contract, PARAMS)
    assert summary["status"] == "ok"
    assert summary["retrain"] is False
    assert summary["drift"]["drifted_features"] == []
    assert summary["drift"]["prediction"]["drifted"] is False
    assert summary["volume"]["rows"] == 138
    for name, entry in summary["drift"]["features"].items():
        assert entry["method"] == ("ks" if name in contract.numeric_features else "chi2")
        assert entry["statistic"] >= PARAMS.drift.p_value, name


def test_one_shifted_feature_drifts_alone(splits, contract):
    frame = held_out(splits)
    frame["flipper_length_mm"] = frame["flipper_length_mm"] + 12
    window, _ = window_of(frame, contract)
    summary = monitor_window(window, splits.train, contract, PARAMS)
    assert summary["drift"]["drifted_features"] == ["flipper_length_mm"]
    entry = summary["drift"]["features"]["flipper_length_mm"]
    assert entry["statistic"] < 0.05 and entry["threshold"] == 0.05 and entry["score"] > 1
    assert entry["detail"]["current_mean"] > entry["detail"]["reference_mean"] + 10
    # One of six features is below the dataset-drift share; the predictions did not move.
    assert summary["drift"]["drift_share"] == pytest.approx(1 / 6, abs=1e-6)
    assert summary["drift"]["dataset_drift"] is False
    assert summary["retrain"] is False


def test_prediction_drift_alone_asks_for_retraining(splits, contract):
    frame = held_out(splits)
    window, _ = window_of(frame, contract, outputs=["Gentoo"] * len(frame))
    summary = monitor_window(window, splits.train, contract, PARAMS)
    assert summary["drift"]["prediction"]["drifted"] is True
    assert summary["drift"]["prediction"]["method"] == "chi2"
    assert summary["retrain"] is True
    assert summary["reasons"] == ["the predictions drifted from the training target's distribution"]


def test_dataset_drift_at_the_share(splits, contract):
    frame = held_out(splits)
    for name in ("bill_length_mm", "bill_depth_mm", "body_mass_g"):
        frame[name] = frame[name] * 1.3
    window, _ = window_of(frame, contract)
    summary = monitor_window(window, splits.train, contract, PARAMS)
    assert summary["drift"]["drifted_features"] == ["bill_length_mm", "bill_depth_mm",
                                                    "body_mass_g"]  # fmt: skip
    assert summary["drift"]["dataset_drift"] is True
    assert summary["status"] == "drift"
    assert summary["reasons"][0].startswith("3 of 6 features drifted (bill_length_mm, ")


def test_large_windows_use_distances(splits, contract):
    rng = np.random.default_rng(0)
    reference = splits.train.sample(3000, replace=True, random_state=1).reset_index(drop=True)
    # Resampled from the same rows, so only the island mix differs.
    frame = splits.train.sample(5000, replace=True, random_state=2).reset_index(drop=True)
    frame["island"] = rng.choice(["Biscoe", "Dream", "Torgersen"], len(frame), p=[0.1, 0.1, 0.8])
    window, _ = window_of(frame, contract)
    summary = monitor_window(window, reference, contract, PARAMS)
    features = summary["drift"]["features"]
    assert {e["method"] for n, e in features.items() if n in contract.numeric_features} == {
        "wasserstein"
    }
    assert features["sex"]["method"] == "jensenshannon"
    assert summary["drift"]["drifted_features"] == ["island"]
    assert features["island"]["statistic"] > PARAMS.drift.categorical_distance


def test_too_few_rows_give_numbers_but_no_verdict(splits, contract):
    frame = splits.test.head(20).copy()
    frame["body_mass_g"] = 6000.0
    window, _ = window_of(frame, contract)
    summary = monitor_window(window, splits.train, contract, PARAMS)
    assert summary["status"] == "insufficient_data"
    assert summary["retrain"] is False
    assert summary["drift"]["features"]["body_mass_g"]["statistic"] < 0.05
    assert summary["drift"]["features"]["body_mass_g"]["drifted"] is False


def test_missing_shares_against_the_contract(splits, contract):
    frame = held_out(splits)
    frame.loc[: len(frame) // 4, "sex"] = None
    window, _ = window_of(frame, contract)
    summary = monitor_window(window, splits.train, contract, PARAMS)
    sex = summary["missing"]["sex"]
    expected = frame["sex"].isna().sum() / len(frame)  # the set rows plus those already missing
    assert expected > 0.25
    assert sex["current"] == pytest.approx(expected, abs=1e-6)
    assert sex["contract_max"] == 0.05 and sex["over_contract"] is True
    assert summary["missing"]["island"] == {
        "current": 0.0, "reference": 0.0, "contract_max": 0.0, "over_contract": False,
    }  # fmt: skip


def test_a_reference_without_a_feature_is_refused(splits, contract):
    window, _ = window_of(splits.test, contract)
    with pytest.raises(PipelineError, match="the reference is missing column.*: sex"):
        monitor_window(window, splits.train.drop(columns="sex"), contract, PARAMS)


# ------------------------------------------------------------------------ the live metric
def test_live_metric_from_feedback_matches_an_independent_count(splits, contract):
    frame = held_out(splits)
    rng = np.random.default_rng(3)
    truth = frame["species"].to_numpy()
    # A model right 80 % of the time: the rest predicted as the next class.
    classes = np.array(["Adelie", "Chinstrap", "Gentoo"])
    wrong = rng.random(len(frame)) < 0.2
    predicted = np.where(wrong, classes[(np.searchsorted(classes, truth) + 1) % 3], truth)
    window, records = window_of(frame, contract, outputs=predicted, rows_per_request=3)
    # Feedback for two thirds of the rows; one row reported twice (the last report wins).
    feedback = [
        {"ts": r["ts"], "request_id": r["request_id"], "row": r["row"], "actual": a}
        for r, a in zip(records, truth, strict=True)
    ][: 2 * len(frame) // 3]
    feedback.insert(0, {**feedback[0], "actual": "Gentoo" if truth[0] != "Gentoo" else "Adelie"})
    summary = monitor_window(
        window, splits.train, contract, PARAMS, feedback=feedback,
        test_metrics={"f1_macro": 1.0, "accuracy": 1.0},
    )  # fmt: skip
    n = 2 * len(frame) // 3
    y, p = truth[:n], predicted[:n]
    f1s = []
    for c in classes:
        tp = np.sum((p == c) & (y == c))
        precision = tp / max(np.sum(p == c), 1)
        recall = tp / max(np.sum(y == c), 1)
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    live = summary["live_metric"]
    assert live["metric"] == "f1_macro" and live["rows"] == n
    assert live["value"] == pytest.approx(np.mean(f1s), abs=1e-6)
    assert live["test_value"] == 1.0
    assert live["degradation"] == pytest.approx(1.0 - np.mean(f1s), abs=1e-6)
    assert live["degraded"] is True
    assert summary["retrain"] is True
    assert summary["reasons"][-1].startswith("live f1_macro 0.")


# ------------------------------------------------------------------------ regression
def test_regression_target_compares_values(splits):
    """A numeric target: the prediction is compared with the training target as a number."""
    features = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "island", "sex")
    columns = [
        ColumnSpec("body_mass_g", "numeric", role="target"),
        *(ColumnSpec(n, "numeric", max_missing=0.05) for n in features[:3]),
        ColumnSpec("island", "categorical", categories=("Biscoe", "Dream", "Torgersen")),
        ColumnSpec("sex", "categorical", categories=("female", "male"), max_missing=0.05),
    ]
    contract = Contract(tuple(columns), 1, None)
    frame = held_out(splits).dropna(subset=["body_mass_g"])
    params = replace(PARAMS, min_rows=10)

    def summary_for(values, feedback=None):
        records = log_records(frame, contract.feature_names, list(values), regression=True)
        for r in records:
            r["_ts"] = r["ts"]
        window = to_window(records, contract, "regression")
        fb = None
        if feedback is not None:
            fb = [{"request_id": r["request_id"], "row": r["row"], "actual": a}
                  for r, a in zip(records, feedback, strict=True)]  # fmt: skip
        return monitor_window(
            window, splits.train, contract, params, feedback=fb, test_metrics={"rmse": 300.0}
        )

    truth = frame["body_mass_g"].to_numpy()
    same = summary_for(truth + 50.0, feedback=truth)
    assert same["task"] == "regression"
    assert same["drift"]["prediction"]["method"] == "ks"
    assert same["drift"]["prediction"]["drifted"] is False
    assert same["live_metric"]["value"] == pytest.approx(50.0)
    assert same["live_metric"]["degraded"] is False
    assert same["predictions"]["p50"] == pytest.approx(np.median(truth) + 50.0)
    shifted = summary_for(truth + 1500.0)
    assert shifted["drift"]["prediction"]["drifted"] is True
    assert shifted["retrain"] is True
    # A prediction logged as null (a model that overflowed) is unscored: it used to make the
    # live RMSE NaN, and NaN > limit is False, which switched the retrain flag off.
    worse = truth + 400.0
    worse[0] = np.nan
    degraded = summary_for(worse, feedback=truth)["live_metric"]
    assert (degraded["rows"], degraded["unscored_rows"]) == (len(truth) - 1, 1)
    assert degraded["value"] == pytest.approx(400.0) and degraded["degraded"] is True


# ------------------------------------------------------------------------ the CLI
def test_main_writes_summary_report_and_flag(tmp_path, splits, contract, monitor_params, capsys):
    reference = tmp_path / "train.parquet"
    splits.train.to_parquet(reference)
    frame = held_out(splits)
    log = tmp_path / "logs" / "predictions.jsonl"
    first = log_records(frame.iloc[:60], contract.feature_names, frame["species"].iloc[:60])
    later = T0 + timedelta(minutes=5)
    rest = log_records(frame.iloc[60:], contract.feature_names, ["Gentoo"] * (len(frame) - 60),
                       start=later, prefix="b")  # fmt: skip
    write_jsonl(log.with_name("predictions.jsonl.1"), first)  # rotated: older rows
    write_jsonl(log, rest)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"f1_macro": 1.0}))
    params = monitor_params(**{"monitor.min_rows": 50})
    out = tmp_path / "report"
    argv = ["--params", str(params), "--predictions", str(log), "--reference", str(reference),
            "--feedback", str(tmp_path / "none.jsonl"), "--test-metrics", str(metrics),
            "--out", str(out), "--end", iso(T0 + timedelta(hours=1))]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["volume"]["rows"] == len(frame)
    assert summary["inputs"]["prediction_logs"] == [str(log.with_name("predictions.jsonl.1")),
                                                    str(log)]  # fmt: skip
    assert summary["drift"]["prediction"]["drifted"] is True
    assert summary["retrain"] is True
    assert (out / RETRAIN_FILE).read_text().startswith("the predictions drifted")
    page = (out / "report.html").read_text()
    assert "Drift: retraining recommended" in page and "<svg" in page
    assert "flipper_length_mm" in page
    assert "retrain: True" in capsys.readouterr().out

    # Only the first window: no drift, and the flag from the last run is gone.
    argv[-1] = iso(later)
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["volume"]["rows"], summary["retrain"]) == (60, False)
    assert not (out / RETRAIN_FILE).exists()


def test_main_leaves_out_other_models_and_damage_and_writes_strict_json(
    tmp_path, splits, contract, monitor_params, capsys
):
    import orjson

    reference = tmp_path / "train.parquet"
    splits.train.to_parquet(reference)
    frame = held_out(splits)
    records = log_records(frame, contract.feature_names, frame["species"])
    records[0]["inputs"]["bill_length_mm"] = 1e308  # the window's std overflows to infinity
    wine = log_records(frame.head(30), contract.feature_names, ["red"] * 30, prefix="w")
    for r in wine:
        r["model"] = {"name": "wine-classifier", "version": "3"}
    log = tmp_path / "predictions.jsonl"
    write_jsonl(log, records + wine)
    with open(log, "a") as handle:
        handle.write("not json\n")
    params = monitor_params(**{"monitor.min_rows": 50})
    out = tmp_path / "report"
    argv = ["--params", str(params), "--predictions", str(log), "--reference", str(reference),
            "--feedback", str(tmp_path / "none.jsonl"), "--test-metrics", str(tmp_path / "m.json"),
            "--out", str(out), "--end", iso(T0 + timedelta(hours=1))]  # fmt: skip
    assert main(argv) == 0
    summary = orjson.loads((out / "summary.json").read_bytes())  # strict: no NaN, no Infinity
    assert summary["volume"]["rows"] == len(frame)
    assert summary["volume"]["other_models"] == {"wine-classifier": 30}
    assert summary["drift"]["features"]["bill_length_mm"]["detail"]["current_std"] is None
    assert "red" not in summary["predictions"]["share"]
    assert summary["inputs"]["damaged_lines"]["prediction_log"]["lines"] == 1
    assert summary["generated_at"].endswith("Z")
    err = capsys.readouterr().err
    assert f"skipped 1 damaged line(s) of the prediction log (first: {log}:{len(frame) + 31}" in err
    assert "left out rows of other models: wine-classifier (30 rows)" in err

    write_jsonl(log, wine)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "the window holds no row of 'penguins-classifier', only of wine-classifier" in err
    assert main([*argv, "--start", iso(T0 + timedelta(hours=2))]) == 1
    assert "--start must be before --end" in capsys.readouterr().err


def test_long_and_many_categories_are_bounded_in_the_summary(contract):
    from pipeline.stages.monitor import OTHER, categorical_drift

    reference = pd.Series(["a", "b"] * 50)
    current = pd.Series(["x" * 10_000] * 5 + [f"c{i}" for i in range(200)])
    drift = categorical_drift("col", reference, current, PARAMS.drift)
    shares = drift.detail["current_share"]
    assert len(shares) == 51 and OTHER in shares
    assert max(map(len, shares)) == 80
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-4)


def test_scores_are_on_a_readable_scale():
    from pipeline.stages.monitor import Drift, _score

    def ks(p):
        return _score(Drift("c", "numeric", "ks", p, 0.05, p < 0.05, 10, 10))

    assert ks(0.05) == pytest.approx(1.0)
    assert ks(0.5) < 1 < ks(0.01)
    assert ks(1e-30) == pytest.approx(30 / 1.30103, rel=1e-3)
    assert ks(0.0) == pytest.approx(300 / 1.30103, rel=1e-3)


def test_main_without_a_log_says_what_to_do(tmp_path, monitor_params, capsys):
    argv = ["--params", str(monitor_params()), "--predictions", str(tmp_path / "nope.jsonl")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("monitor failed: no prediction log at ")
    assert "SERVING_PREDICTION_LOG" in err and "Traceback" not in err


# ------------------------------------------------------------------------ fetch and push
def test_fetch_copies_the_logs_and_their_rotations(tmp_path):
    from pipeline.stages.monitor import fetch_logs

    store = tmp_path / "store"
    store.mkdir()
    for name in ("predictions.jsonl", "predictions.jsonl.1", "feedback.jsonl", "notes.txt"):
        (store / name).write_text(name + "\n")
    copied = fetch_logs(store.as_uri(), tmp_path / "logs")
    assert sorted(p.name for p in copied) == [
        "feedback.jsonl", "predictions.jsonl", "predictions.jsonl.1",
    ]  # fmt: skip
    assert (tmp_path / "logs" / "predictions.jsonl.1").read_text() == "predictions.jsonl.1\n"
    assert not (tmp_path / "logs" / "notes.txt").exists()


def test_fetch_from_nowhere_names_the_uri(tmp_path, capsys):
    missing = (tmp_path / "nope").as_uri()
    assert main(["fetch", "--uri", missing, "--dest", str(tmp_path / "logs")]) == 1
    assert (
        capsys.readouterr().err
        == f"monitor failed: PREDICTION_LOG_URI '{missing}' does not exist.\n"
    )


def test_push_to_an_unreachable_gateway_is_one_clear_line(tmp_path, capsys):
    from pipeline.ports import free_port

    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({
        "drift": {"features": {"sex": {"drifted": False, "score": 0.1}}, "drift_share": 0.0,
                  "prediction": {"drifted": False}},
        "volume": {"rows": 10},
    }))  # fmt: skip
    gateway = f"http://127.0.0.1:{free_port()}"
    assert main(["push", "--summary", str(summary), "--pushgateway", gateway]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"monitor failed: could not push to the pushgateway at {gateway}: ")
    assert "Traceback" not in err
    assert main(["push", "--summary", str(tmp_path / "none.json"), "--pushgateway", gateway]) == 1
    assert "run `make monitor` first" in capsys.readouterr().err
