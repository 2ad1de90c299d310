"""Print where a finished pipeline put its results (the last thing ``make run`` does)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model_spec.descriptor import DescriptorError, ModelDescriptor
from pipeline.config import load_params
from pipeline.errors import cli
from pipeline.tracking import tracking_uri

RESULTS = (
    ("Metrics (test)", "reports/metrics.json"),
    ("Plots (dvc plots show)", "reports/figures"),
    ("Data validation (GX Data Docs)", "reports/validation/data_docs/index.html"),
    ("Exported model", "models/export"),
    ("Model card", "models/export/model_card.md"),
    ("Parity report", "reports/parity.json"),
    ("Gate report", "reports/gate.md"),
)


def summarize(root: Path) -> list[str]:
    """Lines naming each result that exists, the headline metrics and the MLflow run."""
    lines = []
    metrics_file = root / "reports/metrics.json"
    if metrics_file.exists():
        metrics = json.loads(metrics_file.read_text())
        shown = ", ".join(
            f"{k} {metrics[k]:.4f}"
            for k in ("accuracy", "f1_macro", "roc_auc_ovr", "log_loss", "rmse", "mae", "r2")
            if k in metrics
        )
        lines.append(f"{'Test metrics:':34} {shown}")
    export_dir = root / "models/export"
    if export_dir.exists():
        try:
            d = ModelDescriptor.read(export_dir)
            lines.append(
                f"{'Model:':34} {d.name} ({d.task.value}, {d.estimator}, "
                f"{len(d.inputs)} inputs -> {', '.join(d.onnx.outputs)})"
            )
        except DescriptorError as exc:
            lines.append(f"{'Model:':34} unreadable descriptor: {exc}")
    gate_file = root / "reports/gate.json"
    if gate_file.exists():
        gate = json.loads(gate_file.read_text())
        run = (gate.get("candidate") or {}).get("run_id")
        if gate.get("invalidated"):
            verdict = f"not judged: {gate.get('note')}"
        elif gate.get("passed"):
            verdict = f"passed ({len(gate.get('checks') or [])} checks) for run {run}"
        else:
            verdict = f"FAILED for run {run}: {', '.join(gate.get('failed') or [])}"
        lines.append(f"{'Gate:':34} {verdict}")
    for label, rel in RESULTS:
        if (root / rel).exists():
            lines.append(f"{label + ':':34} {rel}")
    run_file = root / "models/train/run.json"
    if run_file.exists():
        run = json.loads(run_file.read_text())
        lines.append(f"{'MLflow run:':34} {run['run_id']} (experiment {run['experiment_id']})")
        lines.append(f"{'MLflow store:':34} {tracking_uri()}")
        lines.append(
            f"{'Browse it:':34} make ui, then open http://127.0.0.1:5000/#/experiments/"
            f"{run['experiment_id']}/runs/{run['run_id']}"
        )
    return lines


@cli("summary")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    load_params(args.params)  # fail clearly if run outside the project
    print("\nPipeline finished.")
    for line in summarize(Path.cwd()):
        print(f"  {line}")


if __name__ == "__main__":
    raise SystemExit(main())
