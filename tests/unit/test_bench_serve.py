"""The verdict of ``benchmarks/bench_serve.py`` (the benchmark itself is ``make bench-serve``,
not part of the test suite): which of issue 10's lines a report meets."""

from __future__ import annotations

from benchmarks import bench_serve as bs


def _run(label: str, rps: float, p99: float = 5.0) -> bs.WrkResult:
    return bs.WrkResult(label, 16, 15, int(rps * 15), rps, 2.0, p99)


def _passing() -> bs.Report:
    report = bs.Report(
        ready_first_s=[0.5], ready_all_s=[0.6],
        runs=[_run("ours, 1 row", 7000), _run("ours, 100 rows", 3500),
              _run("gunicorn, 1 row", 3000), _run("mlflow-onnx, 1 row", 300)],
        soak=_run("soak", 5000), rss_after_warmup_mb=200.0, rss_end_mb=201.0,
        slow=_run("slow", 5000, p99=8.0),
        lying_length={"status": "408", "seconds": 5.0, "json": True},
        sigterm={"ok_lb": 1000, "reset_lb": 0, "ok_reconnecting": 3000,
                 "reset_reconnecting": 0, "exit": 0},
        kill9={"ok": 10000, "reset": 1, "other": {}},
    )  # fmt: skip
    return report


def test_a_report_meeting_every_line_has_no_failure():
    assert bs.verdict(_passing()) == []


def test_a_reset_of_a_reconnecting_client_on_sigterm_is_a_failure():
    report = _passing()
    report.sigterm["reset_reconnecting"] = 1
    assert bs.verdict(report) == [
        "SIGTERM: 0 load-balancer-style and 1 reconnecting requests reset"
    ]


def test_throughput_ratio_and_kill9_misses_are_each_named():
    report = _passing()
    report.runs[0] = _run("ours, 1 row", 2896, p99=11.39)
    report.kill9["reset"] = 10
    assert bs.verdict(report) == [
        "one-row throughput 2,896 req/s < 6,000",
        "one-row p99 11.39 ms > 10.0 ms",
        "0.97x gunicorn, below 1.7x",
        "9.7x mlflow-onnx, below 20x",
        "kill -9 of a worker: 10 requests failed",
    ]
