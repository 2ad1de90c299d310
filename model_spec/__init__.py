"""What the pipeline and the server agree on, defined once.

* :mod:`model_spec.task`: the learning task (binary, multiclass, regression);
* :mod:`model_spec.descriptor`: the model descriptor ``model.json`` that export writes and the
  gate, the registry, the server, the benchmarks and the CI scripts read;
* :mod:`model_spec.feed`: raw column values to the ONNX graph's input arrays.

Pure Python (``feed`` also needs numpy), so the serving image can ship it without pandas.
"""
