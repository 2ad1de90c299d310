"""The pipeline's stages, one module each, named like the stage in ``dvc.yaml``, its ``params.yaml``
block, its make target and its MLproject entry point. A stage imports only the shared modules in
``pipeline/`` (never another stage), so each can run, and be tested, alone."""
