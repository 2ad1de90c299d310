"""The calibration peer of ``make bench-serve``: the bare app ENVIRONMENT.md's anchor figure was
taken with (Flask under gunicorn with 2 sync workers and ONNX Runtime, no auth, validation,
metrics or logs), serving the same ``model.onnx``. Its throughput in the same run says how fast
this machine is today: the anchor did 3,213 one-row requests/s when the issue targets were set.

``SERVING_MODEL_DIR=models/export gunicorn -w 2 -b 127.0.0.1:PORT benchmarks.anchor_app:app``
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort
import orjson
from flask import Flask, Response, request

from model_spec.descriptor import ModelDescriptor
from model_spec.feed import build_feed

_dir = Path(os.environ["SERVING_MODEL_DIR"])
_descriptor = ModelDescriptor.read(_dir)
_options = ort.SessionOptions()
_options.intra_op_num_threads = 1
_options.inter_op_num_threads = 1
_session = ort.InferenceSession(
    str(_dir / _descriptor.onnx.file), _options, providers=["CPUExecutionProvider"]
)

app = Flask(__name__)


@app.post("/predict")
def predict() -> Response:
    rows = orjson.loads(request.get_data())["dataframe_records"]
    feed = build_feed(
        _descriptor, {s.name: [r.get(s.name) for r in rows] for s in _descriptor.inputs}
    )
    first = _session.run(None, feed)[0]
    return Response(orjson.dumps({"predictions": first.tolist()}), content_type="application/json")
